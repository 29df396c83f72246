"""Per-sample gradient inner products on selected linear layers, without per-sample backward passes.

For a linear layer ``out = a @ W`` (GPT-2 ``Conv1D``: W is (d_in, d_out); ``nn.Linear`` stores W^T) the
gradient of sample i's loss is a sum of outer products over its T positions::

    G_i = A_i^T D_i        A_i: (T, d_in) layer inputs,  D_i: (T, d_out) = d l_i / d out_i

so one forward (saving A) and one backward of ``sum_i l_i`` to the layer outputs (giving every D_i at
once, since samples do not interact) yield all per-sample gradients in factored form. Inner products
then follow either from the factors ("ghost" trick, GREATS: Wang et al., NeurIPS 2024,
``utils_ghost_dot_prod.py``)::

    <G_i, G_j> = sum_{t,s} (A_i A_j^T)_{ts} (D_i D_j^T)_{ts}          cost B_1 B_2 T^2 (d_in + d_out)

or by materialising G_i with one batched matmul (cost B T d_in d_out, then B_1 B_2 d_in d_out); ``gram``
picks the cheaper. The Adam preconditioner P = 1 / (sqrt(v_hat) + eps) is not factorable in general; as
in Adafactor (Shazeer & Stern 2018) v_hat is approximated by its rank-1 fit r c^T / sum(v_hat), so that
P ~ p q^T and P o G_i = diag(p) A_i^T D_i diag(q): scaling A's columns by p and D's by q keeps the
factored form (research notes, continual.md sec. 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from training.selection.base import per_token_loss, sample_loss

__all__ = [
    "Factors",
    "adam_scales",
    "capture",
    "gram",
    "last_mlp_layers",
    "layer_weight_grads",
    "materialize",
    "target_products",
]


@dataclass
class Factors:
    """Factored per-sample gradients of one layer: A (B, T, d_in), D (B, T, d_out), float32, detached."""

    layer: torch.nn.Module
    A: torch.Tensor
    D: torch.Tensor


def last_mlp_layers(model: torch.nn.Module, n_blocks: int = 1) -> list[torch.nn.Module]:
    """The MLP projections (``c_fc``, ``c_proj``) of the last ``n_blocks`` transformer blocks.

    Works for GPT-2 style models (``model.transformer.h``); for other architectures, the last
    ``2 * n_blocks`` ``nn.Linear`` modules other than the output head.

    Raises:
        ValueError: if no suitable layer exists.
    """
    base = getattr(model, "module", model)  # DDP / peft wrappers keep the model in .module / .base_model
    blocks = getattr(getattr(base, "transformer", None), "h", None)
    if blocks is not None:
        return [m for blk in list(blocks)[-n_blocks:] for m in (blk.mlp.c_fc, blk.mlp.c_proj)]
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    linears = [m for m in base.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    if not linears:
        raise ValueError("no linear layers found for per-sample gradients")
    return linears[-2 * n_blocks :]


def _is_linear(layer: torch.nn.Module) -> bool:
    return isinstance(layer, torch.nn.Linear)  # weight (d_out, d_in); GPT-2 Conv1D stores (d_in, d_out)


def capture(
    model: torch.nn.Module,
    layers: list[torch.nn.Module],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    bf16: bool = False,
) -> tuple[torch.Tensor, list[Factors]]:
    """One forward and a partial backward giving per-sample losses and the factors of ``layers``.

    Only the graph from the loss down to the layers' outputs is traversed (``torch.autograd.grad`` on the
    outputs), so earlier layers cost no backward. Model parameters' ``.grad`` are not touched.

    Args:
        inputs, targets: (B, T) int64.

    Returns:
        ``(losses, factors)``: (B,) float32 detached per-sample mean losses and one ``Factors`` per layer.
    """
    saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(module, args, output):
        saved[id(module)] = (args[0].detach(), output)

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        with torch.enable_grad():
            per = sample_loss(per_token_loss(model, inputs, targets, bf16), targets)  # (B,)
            outs = [saved[id(layer)][1] for layer in layers]
            grads = torch.autograd.grad(per.sum(), outs)
    finally:
        for h in handles:
            h.remove()
    factors = [Factors(layer, saved[id(layer)][0].float(), g.detach().float()) for layer, g in zip(layers, grads)]
    return per.detach(), factors


def adam_scales(
    optimizer: torch.optim.Optimizer, layer: torch.nn.Module, eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Rank-1 factors (p (d_in,), q (d_out,)) with p q^T ~ 1 / (sqrt(v_hat) + eps) for ``layer.weight``.

    v_hat = exp_avg_sq / (1 - beta2^step) (Adam's bias correction); its rank-1 fit is r c^T / S with
    r, c its row and column sums and S its total (Adafactor), so 1/sqrt(v_hat) ~ S^(1/2) / (sqrt(r) sqrt(c)^T).
    eps is folded into r and c. Returns None when the optimiser has no state for the weight yet (P = I).
    """
    st = optimizer.state.get(layer.weight, {})
    v = st.get("exp_avg_sq")
    if v is None or "step" not in st:
        return None
    beta2 = next(g["betas"][1] for g in optimizer.param_groups if any(p is layer.weight for p in g["params"]))
    v_hat = v.float() / (1 - beta2 ** float(st["step"]))
    if _is_linear(layer):
        v_hat = v_hat.t()  # orient as (d_in, d_out)
    r, c, s = v_hat.sum(1), v_hat.sum(0), v_hat.sum()
    tiny = eps * eps * v_hat.shape[0] * v_hat.shape[1]
    p = (s + tiny) ** 0.25 / (r + eps * eps * v_hat.shape[1]).sqrt()
    q = (s + tiny) ** 0.25 / (c + eps * eps * v_hat.shape[0]).sqrt()
    return p, q


def _scaled(f: Factors, scales: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
    if scales is None:
        return f.A, f.D
    p, q = scales
    return f.A * p, f.D * q


def materialize(A: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """(B, d_in, d_out) per-sample weight gradients G_i = A_i^T D_i (one bmm)."""
    return torch.bmm(A.transpose(1, 2), D)


def gram(A1: torch.Tensor, D1: torch.Tensor, A2: torch.Tensor, D2: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """(B1, B2) inner products <A1_i^T D1_i, A2_j^T D2_j> of factored per-sample gradients.

    Args:
        A1: (B1, T, d_in), D1: (B1, T, d_out); A2, D2 likewise with B2 rows (any T).
        method: "ghost" (factor products, never materialises d_in x d_out), "materialize", or "auto" (the
            cheaper by the operation counts in the module docstring).
    """
    b1, t1, d_in = A1.shape
    b2, t2, d_out = D2.shape
    if method == "auto":
        ghost_cost = b1 * b2 * t1 * t2 * (d_in + d_out)
        mat_cost = (b1 * t1 + b2 * t2 + b1 * b2) * d_in * d_out
        method = "ghost" if ghost_cost < mat_cost else "materialize"
    if method == "materialize":
        return materialize(A1, D1).flatten(1) @ materialize(A2, D2).flatten(1).T
    assert method == "ghost", f"unknown method {method!r}"
    out = torch.empty(b1, b2, dtype=A1.dtype, device=A1.device)
    for i in range(b1):  # one row at a time bounds memory at B2 * T^2
        aa = torch.einsum("ti,bsi->bts", A1[i], A2)  # (B2, T1, T2)
        dd = torch.einsum("to,bso->bts", D1[i], D2)
        out[i] = (aa * dd).sum((1, 2))
    return out


def layer_weight_grads(
    model: torch.nn.Module,
    layers: list[torch.nn.Module],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    bf16: bool = False,
) -> tuple[float, list[torch.Tensor]]:
    """Mean loss over ``inputs`` and its gradient w.r.t. each layer's weight, oriented (d_in, d_out).

    A partial backward (``torch.autograd.grad``); ``.grad`` of the parameters is not touched.
    """
    with torch.enable_grad():
        loss = sample_loss(per_token_loss(model, inputs, targets, bf16), targets).mean()
        grads = torch.autograd.grad(loss, [layer.weight for layer in layers])
    return loss.item(), [(g.t() if _is_linear(layer) else g).detach().float() for layer, g in zip(layers, grads)]


def target_products(
    factors: list[Factors],
    target: list[torch.Tensor],
    scales: list[tuple[torch.Tensor, torch.Tensor] | None],
    with_gram: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Alignment b_i = sum_layers <P o G_i, G_target> and Gram K_ij = sum_layers <P o G_i, P o G_j>.

    Args:
        factors: per-layer factors of B samples; target: per-layer (d_in, d_out) target gradients;
        scales: per-layer ``adam_scales`` (None = identity preconditioner).

    Returns:
        ``(b, K)``: (B,) and (B, B) float32 (K is None if ``with_gram`` is False).
    """
    b = None
    K = None
    for f, g_t, sc in zip(factors, target, scales):
        A, D = _scaled(f, sc)
        bl = ((A @ g_t) * D).sum((1, 2))  # sum_t (A_t o p) G_T (D_t o q)^T; einsum picks a slow order here
        b = bl if b is None else b + bl
        if with_gram:
            kl = gram(A, D, A, D)
            K = kl if K is None else K + kl
    assert b is not None, "no layers given"
    return b, K
