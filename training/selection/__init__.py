"""Online data selection and weighting strategies for the fine-tune step (one module each).

=================  ====================================================  ==========================
``selection``      strategy                                              module
=================  ====================================================  ==========================
``uniform``        every drawn block, weight 1 (default)                 ``uniform``
``loss_reweight``  in-batch weights from the loss (Sow et al. 2025)      ``loss_reweight``
``rho_loss``       top reducible loss of a larger pool (Mindermann 2022) ``rho_loss``
``greats``         Adam-aware filter + QP weights (Wang et al. 2024/26)  ``greats`` (+ ``ghost``)
``dwm``            learned in-batch weights, hypergradient (Yu 2025)     ``dwm``
``d3``             influence-graph ordering of units (Xu et al. 2026)    ``d3``
=================  ====================================================  ==========================

The interface is ``base.Selector.select(CandidateBatch, TrainState) -> Selection`` (kept indices and
per-sample weights); ``training.loop.fit`` takes a selector and ``training.finetune.finetune`` builds it
from ``TrainConfig.selection`` / ``selection_params`` with ``make_selector``. Settings are parsed by
``params.parse_params`` (torch-free, used by ``TrainConfig`` validation). Strategies that need a
reference slice (``needs_reference``) get held-out rows of the new data that are never trained on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from training.selection.params import STRATEGIES, parse_params

if TYPE_CHECKING:
    import torch

    from training.config import TrainConfig
    from training.selection.base import Selector

__all__ = ["STRATEGIES", "make_selector", "needs_reference", "parse_params", "reference_fraction"]


def needs_reference(selection: str) -> bool:
    """Whether strategy ``selection`` uses a reference slice (held-out rows of the new data)."""
    return selection in ("rho_loss", "greats", "dwm")


def reference_fraction(selection: str, selection_params: str = "") -> float:
    """Share of the training texts to hold back as the reference slice (0 if the strategy needs none)."""
    if not needs_reference(selection):
        return 0.0
    return float(parse_params(selection, selection_params).ref_fraction)


def make_selector(cfg: TrainConfig, reference: torch.Tensor | None = None) -> Selector | None:
    """The strategy object for ``cfg.selection`` (None for ``"uniform"``: ``fit`` runs its plain loop).

    Args:
        cfg: the update's training config (``selection``, ``selection_params``, ``peak_lr``, ``seed``).
        reference: (M, T + 1) int64 packed reference blocks, required by ``needs_reference`` strategies.

    Raises:
        ValueError: unknown strategy or settings, or a missing/empty reference slice.
    """
    params = parse_params(cfg.selection, cfg.selection_params)
    if cfg.selection == "uniform":
        return None
    if needs_reference(cfg.selection) and (reference is None or reference.shape[0] == 0):
        raise ValueError(f"selection {cfg.selection!r} needs a non-empty reference slice")
    # lazy (all four below and D3): the strategies import torch; this package is imported by the torch-free
    # ``training.config`` (through ``selection.params``)
    if cfg.selection == "loss_reweight":
        from training.selection.loss_reweight import LossReweight

        return LossReweight(params)
    if cfg.selection == "rho_loss":
        from training.selection.rho_loss import RhoLoss

        return RhoLoss(params, reference, lr=cfg.peak_lr, seed=cfg.seed)
    if cfg.selection == "greats":
        from training.selection.greats import Greats

        return Greats(params, reference, seed=cfg.seed)
    if cfg.selection == "dwm":
        from training.selection.dwm import Dwm

        return Dwm(params, reference, seed=cfg.seed)
    from training.selection.d3 import D3

    assert cfg.selection == "d3", f"unhandled strategy {cfg.selection!r}"
    return D3(params, seed=cfg.seed)
