import dataclasses

import pytest
import torch

from training.data import pack_texts
from training.loop import fit, load_optimizer_state, make_optimizer, warmup_steps

CPU = torch.device("cpu")


def test_make_optimizer_decays_only_matrices(tiny_model, tiny_train_cfg):
    model, _ = tiny_model
    opt = make_optimizer(model, tiny_train_cfg)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == tiny_train_cfg.weight_decay and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    n_params = sum(1 for _ in model.parameters())
    assert len(decay["params"]) + len(no_decay["params"]) == n_params


def test_fit_decreases_loss_on_a_repeated_corpus(tiny_model, tiny_train_cfg, corpus):
    model, tok = tiny_model
    blocks = pack_texts(tok, corpus[:100], tiny_train_cfg.seq_len)
    seen = []
    result = fit(
        model,
        make_optimizer(model, tiny_train_cfg),
        blocks,
        tiny_train_cfg,
        device=CPU,
        total_steps=60,
        on_step=lambda *point: seen.append(point),
    )
    assert result.steps == 60 and model.training
    assert [s for s, _, _ in result.curve] == list(range(5, 61, 5))
    assert seen == result.curve
    first, last = result.curve[0][1], result.final_loss
    assert last < first - 0.5, f"loss did not drop enough: {first:.3f} -> {last:.3f}"
    assert result.curve[-1][2] == pytest.approx(tiny_train_cfg.peak_lr * tiny_train_cfg.min_lr_ratio)
    assert result.train_tokens == 60 * tiny_train_cfg.batch_size * tiny_train_cfg.seq_len
    assert result.tokens_per_second == pytest.approx(result.train_tokens / result.wall_seconds)


def test_fit_is_reproducible_with_the_same_seed(base_dir, tiny_train_cfg, corpus):
    from training.modeling import load_model

    losses = []
    for _ in range(2):
        model, tok = load_model(base_dir)
        blocks = pack_texts(tok, corpus[:50], tiny_train_cfg.seq_len)
        losses.append(
            fit(model, make_optimizer(model, tiny_train_cfg), blocks, tiny_train_cfg, device=CPU, total_steps=5).curve
        )
    assert losses[0] == losses[1]


def test_fit_rejects_empty_blocks(tiny_model, tiny_train_cfg):
    model, _ = tiny_model
    with pytest.raises(ValueError, match="`blocks`"):
        fit(
            model,
            make_optimizer(model, tiny_train_cfg),
            torch.empty((0, 33), dtype=torch.long),
            tiny_train_cfg,
            device=CPU,
            total_steps=1,
        )


def test_warmup_steps_is_at_least_one():
    assert warmup_steps(10, 0.0) == 1
    assert warmup_steps(1000, 0.05) == 50
    assert warmup_steps(1, 0.5) == 1


def _train_and_save_state(model, tok, cfg, corpus, path):
    opt = make_optimizer(model, cfg)
    fit(model, opt, pack_texts(tok, corpus[:40], cfg.seq_len), cfg, device=CPU, total_steps=3)
    torch.save({"optimizer": opt.state_dict(), "global_step": 3}, path)
    return opt


def test_load_optimizer_state_overrides_stale_initial_lr(tiny_model, tiny_train_cfg, corpus, tmp_path):
    model, tok = tiny_model
    old_cfg = dataclasses.replace(tiny_train_cfg, peak_lr=1e-3, weight_decay=0.1)
    old = _train_and_save_state(model, tok, old_cfg, corpus, tmp_path / "train_state.pt")

    new_cfg = dataclasses.replace(tiny_train_cfg, peak_lr=5e-4, weight_decay=0.0, log_every=1)
    opt = make_optimizer(model, new_cfg)
    assert load_optimizer_state(opt, tmp_path / "train_state.pt", new_cfg.peak_lr)
    for group in opt.param_groups:
        assert group["initial_lr"] == group["lr"] == 5e-4
        assert group["weight_decay"] == 0.0  # this update's hyper-parameters win over the saved ones
    # moments and step counts are carried over
    p = opt.param_groups[0]["params"][0]
    assert torch.equal(opt.state[p]["exp_avg"], old.state[p]["exp_avg"])
    assert int(opt.state[p]["step"]) == 3
    # a scheduler built now re-warms to the new peak, not the saved one
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    assert sched.base_lrs == [5e-4, 5e-4]
    # and the loop's schedule peaks at the new peak
    result = fit(model, opt, pack_texts(tok, corpus[:40], new_cfg.seq_len), new_cfg, device=CPU, total_steps=20)
    assert max(lr for _, _, lr in result.curve) == pytest.approx(5e-4)
    assert int(opt.state[p]["step"]) == 23


def test_load_optimizer_state_tolerates_missing_garbage_or_foreign_state(tiny_model, tiny_train_cfg, corpus, tmp_path):
    model, tok = tiny_model
    opt = make_optimizer(model, tiny_train_cfg)
    assert not load_optimizer_state(opt, tmp_path / "missing.pt", 1e-3)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    assert not load_optimizer_state(opt, tmp_path / "garbage.pt", 1e-3)
    torch.save({"something": 1}, tmp_path / "foreign.pt")
    assert not load_optimizer_state(opt, tmp_path / "foreign.pt", 1e-3)

    # same parameter count, different shapes: a wider embedding
    other = torch.nn.Sequential(torch.nn.Embedding(500, 16))
    bigger_opt = torch.optim.AdamW([{"params": [other[0].weight]}, {"params": []}])
    other[0].weight.sum().backward()
    bigger_opt.step()
    torch.save({"optimizer": bigger_opt.state_dict()}, tmp_path / "other.pt")
    assert not load_optimizer_state(opt, tmp_path / "other.pt", 1e-3)
    assert opt.state_dict()["state"] == {}
