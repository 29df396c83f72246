"""Selection inside the training loop and the fine-tune step: the uniform default is the plain loop, every
strategy runs an update end to end, and its statistics reach MLflow."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from training.data import IGNORE_INDEX, pack_texts, split_block
from training.loop import fit, make_optimizer, warmup_steps
from training.schedule import get_lr
from training.selection import STRATEGIES, make_selector
from training.selection.base import random_batches
from training.selection.uniform import Uniform

CPU = torch.device("cpu")


def _reference_loop(model, blocks, cfg, steps):
    """The baseline written out by hand: seeded random minibatches, mean token CE, clip, AdamW."""
    opt = make_optimizer(model, cfg)
    batches = random_batches(
        blocks.shape[0], min(cfg.batch_size, blocks.shape[0]), torch.Generator().manual_seed(cfg.seed)
    )
    warm = warmup_steps(steps, cfg.warmup_fraction)
    losses = []
    model.train()
    for step in range(steps):
        lr = get_lr(step, steps, cfg.peak_lr, warm, cfg.peak_lr * cfg.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = split_block(blocks[next(batches)])
        loss = F.cross_entropy(
            model(input_ids=x, use_cache=False).logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], cfg.grad_clip)
        opt.step()
        losses.append(loss.item())
    return losses


def test_uniform_default_reproduces_the_baseline_loop_exactly(base_dir, tiny_train_cfg, corpus):
    from training.modeling import load_model

    cfg = dataclasses.replace(tiny_train_cfg, log_every=1)
    assert cfg.selection == "uniform" and make_selector(cfg) is None
    model, tok = load_model(base_dir)
    blocks = pack_texts(tok, corpus[:60], cfg.seq_len)
    result = fit(model, make_optimizer(model, cfg), blocks, cfg, device=CPU, total_steps=6, selector=make_selector(cfg))
    ref_model, _ = load_model(base_dir)
    expected = _reference_loop(ref_model, blocks, cfg, 6)
    assert [loss for _, loss, _ in result.curve] == expected  # bit-for-bit
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(p, q)
    assert result.selection["selection_kept_fraction"] == 1.0 and result.selection["selection_overhead_s"] == 0.0


def test_uniform_through_the_selective_path_matches_the_plain_loop(base_dir, tiny_train_cfg, corpus):
    from training.modeling import load_model

    cfg = dataclasses.replace(tiny_train_cfg, log_every=1)
    curves = []
    for selector in (None, Uniform()):
        model, tok = load_model(base_dir)
        blocks = pack_texts(tok, corpus[:60], cfg.seq_len)
        r = fit(model, make_optimizer(model, cfg), blocks, cfg, device=CPU, total_steps=6, selector=selector)
        curves.append([loss for _, loss, _ in r.curve])
    # the weighted mean of per-block means equals the token mean for full blocks (summation order differs)
    assert curves[1] == pytest.approx(curves[0], rel=1e-5)
    assert r.selection["selection_steps"] == 6 and r.selection["selection_weight_entropy"] == pytest.approx(1.0)


@pytest.mark.parametrize("selection", list(STRATEGIES))
def test_an_update_with_each_strategy_runs_and_reports_its_statistics(
    selection, base_dir, tiny_train_cfg, corpus, tmp_path
):
    from training.finetune import FinetuneRequest, finetune

    cfg = dataclasses.replace(
        tiny_train_cfg,
        max_steps=4,
        selection=selection,
        selection_params="il_steps=2" if selection == "rho_loss" else "",
    )
    result = finetune(
        FinetuneRequest(
            parent=base_dir, train_texts=corpus[:120], new_eval_texts=corpus[300:320], cfg=cfg, out_dir=tmp_path / "out"
        )
    )
    m = result.metrics()
    assert 0 < m["selection_kept_fraction"] <= 1 and 0 <= m["selection_weight_entropy"] <= 1 + 1e-9
    assert m["selection_overhead_s"] >= 0 and math.isfinite(m["challenger_new_bpb"])
    assert m["selection_steps"] == (0 if selection == "uniform" else 4)
    assert (m["selection_reference_texts"] > 0) == (selection in ("rho_loss", "greats", "dwm"))
    if selection in ("rho_loss", "greats"):  # they filter a pool twice the batch
        assert m["selection_kept_fraction"] <= 0.5 and m["selection_scored_tokens"] > 0
    if selection == "loss_reweight":
        assert m["selection_weight_entropy"] < 1
    assert m["train_tokens"] <= 4 * cfg.batch_size * cfg.seq_len


def test_selection_strategy_and_statistics_are_logged_to_mlflow(base_dir, tiny_train_cfg, corpus, tmp_path):
    pytest.importorskip("mlflow")
    from training.finetune import FinetuneRequest, finetune
    from training.tracking import ModelRegistry

    cfg = dataclasses.replace(tiny_train_cfg, max_steps=3, selection="greats", selection_params="pool=2,cap=2")
    result = finetune(
        FinetuneRequest(
            parent=base_dir, train_texts=corpus[:120], new_eval_texts=corpus[300:320], cfg=cfg, out_dir=tmp_path / "v2"
        )
    )
    registry = ModelRegistry(f"sqlite:///{tmp_path}/mlflow.db", f"file://{tmp_path}/mlartifacts")
    run_id, _ = registry.log_update(
        run_name="selection",
        model_dir=result.output_dir,
        params={f"train.{k}": v for k, v in cfg.to_dict().items()},
        metrics=result.metrics(),
        curve=result.fit.curve,
        tags={},
        artifacts={},
        description="selection test",
    )
    run = registry.client.get_run(run_id)
    assert run.data.params["train.selection"] == "greats"
    assert run.data.params["train.selection_params"] == "pool=2,cap=2"
    for key in ("selection_overhead_s", "selection_kept_fraction", "selection_weight_entropy"):
        assert key in run.data.metrics
    assert run.data.metrics["selection_kept_fraction"] == pytest.approx(result.metrics()["selection_kept_fraction"])
