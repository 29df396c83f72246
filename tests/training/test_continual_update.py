"""A continual update: killed and resumed from a checkpoint, AR meta-schedule peak, LoRA merge, eval matrix."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from training.config import TrainConfig
from training.finetune import CHECKPOINT_FILE, TRAIN_STATE_FILE, FinetuneRequest, finetune
from training.modeling import load_model
from training.schedule import ar_meta_peak_lr


class Killed(Exception):
    pass


def cfg(**kw) -> TrainConfig:
    base = dict(
        seq_len=32,
        batch_size=8,
        peak_lr=3e-3,
        max_steps=20,
        bf16=False,
        threads=1,
        eval_batch_size=16,
        log_every=5,
        checkpoint_every=5,
    )
    return TrainConfig(**{**base, **kw})


def test_killed_update_resumes_to_the_same_weights_and_the_parent_is_untouched(tmp_path, base_dir, corpus):
    parent_weights = (base_dir / "model.safetensors").read_bytes()
    ref = finetune(
        FinetuneRequest(
            parent=base_dir,
            train_texts=corpus[:200],
            new_eval_texts=corpus[300:320],
            cfg=cfg(),
            out_dir=tmp_path / "ref",
        )
    )

    ckpt_dir = tmp_path / "ckpt"

    def kill_at_12(step, loss, lr):
        if step >= 12:
            raise Killed

    with pytest.raises(Killed):
        finetune(
            FinetuneRequest(
                parent=base_dir,
                train_texts=corpus[:200],
                new_eval_texts=corpus[300:320],
                cfg=cfg(log_every=1),
                out_dir=tmp_path / "out",
                checkpoint_dir=ckpt_dir,
                on_step=kill_at_12,
            )
        )
    saved = torch.load(ckpt_dir / CHECKPOINT_FILE, weights_only=True)
    assert saved["step"] == 10
    assert not (tmp_path / "out").exists()  # nothing half-finished was published
    assert (base_dir / "model.safetensors").read_bytes() == parent_weights

    resumed = finetune(
        FinetuneRequest(
            parent=base_dir,
            train_texts=corpus[:200],
            new_eval_texts=corpus[300:320],
            cfg=cfg(log_every=1),
            out_dir=tmp_path / "out",
            checkpoint_dir=ckpt_dir,
        )
    )
    assert resumed.resumed_from_step == 10 and resumed.fit.steps == 20
    assert not (ckpt_dir / CHECKPOINT_FILE).exists()  # a finished update removes its checkpoint
    a, b = load_file(tmp_path / "ref" / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert resumed.challenger_new.bits_per_byte == pytest.approx(ref.challenger_new.bits_per_byte, rel=1e-5)


def test_checkpoint_of_another_update_is_discarded(tmp_path, base_dir, corpus):
    ckpt_dir = tmp_path / "ckpt"
    with pytest.raises(Killed):
        finetune(
            FinetuneRequest(
                parent=base_dir,
                train_texts=corpus[:200],
                new_eval_texts=corpus[300:320],
                cfg=cfg(log_every=1),
                out_dir=tmp_path / "a",
                checkpoint_dir=ckpt_dir,
                on_step=lambda s, loss, lr: (_ for _ in ()).throw(Killed) if s >= 7 else None,
            )
        )
    assert (ckpt_dir / CHECKPOINT_FILE).exists()
    other = finetune(
        FinetuneRequest(
            parent=base_dir,
            train_texts=corpus[50:250],
            new_eval_texts=corpus[300:320],
            cfg=cfg(),
            out_dir=tmp_path / "b",
            checkpoint_dir=ckpt_dir,
        )
    )
    assert other.resumed_from_step == 0


def test_ar_meta_schedule_lowers_the_second_peak_and_overrides_the_stale_initial_lr(tmp_path, base_dir, corpus):
    c = cfg(lr_schedule="ar_meta", checkpoint_every=0)
    first = finetune(
        FinetuneRequest(
            parent=base_dir, train_texts=corpus[:200], new_eval_texts=corpus[300:320], cfg=c, out_dir=tmp_path / "v1"
        )
    )
    assert first.peak_lr == pytest.approx(3e-3)
    lrs = []
    second = finetune(
        FinetuneRequest(
            parent=tmp_path / "v1",
            train_texts=corpus[200:300],
            new_eval_texts=corpus[300:320],
            cfg=c,
            out_dir=tmp_path / "v2",
            on_step=lambda s, loss, lr: lrs.append(lr),
        )
    )
    expected = ar_meta_peak_lr(20, 20, 3e-3, 3e-4)
    assert second.optimizer_resumed and second.peak_lr == pytest.approx(expected)
    assert max(lrs) <= expected + 1e-12
    state = torch.load(tmp_path / "v2" / TRAIN_STATE_FILE, weights_only=True)
    assert all(g["initial_lr"] == pytest.approx(expected) for g in state["optimizer"]["param_groups"])
    assert state["global_step"] == 40


def test_lora_update_registers_a_merged_plain_model(tmp_path, base_dir, corpus):
    pytest.importorskip("peft")
    result = finetune(
        FinetuneRequest(
            parent=base_dir,
            train_texts=corpus[:200],
            new_eval_texts=corpus[300:320],
            cfg=cfg(lora_r=4, peak_lr=1e-2, checkpoint_every=0),
            out_dir=tmp_path / "lora",
        )
    )
    assert result.lora
    names = {p.name for p in (tmp_path / "lora").iterdir()}
    assert "model.safetensors" in names and "adapter_config.json" not in names
    model, _ = load_model(tmp_path / "lora")  # loads as a plain causal LM
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert result.challenger_new.bits_per_byte < result.champion_new.bits_per_byte


def test_forward_matrix_and_first_window_evaluations(tmp_path, base_dir, corpus):
    result = finetune(
        FinetuneRequest(
            parent=base_dir,
            train_texts=corpus[:200],
            new_eval_texts=corpus[300:320],
            retention_eval_texts=corpus[320:340],
            cfg=cfg(checkpoint_every=0),
            out_dir=tmp_path / "m",
            first_eval_texts=corpus[340:360],
            forward_eval={"w2": corpus[300:320]},
            matrix_eval={"w1": corpus[320:340], "w2": corpus[300:320]},
        )
    )
    assert set(result.forward_before) == {"w2"} and set(result.matrix_after) == {"w1", "w2"}
    assert result.forward_before["w2"].bits_per_byte == pytest.approx(result.champion_new.bits_per_byte)
    assert result.matrix_after["w2"].bits_per_byte == pytest.approx(result.challenger_new.bits_per_byte)
    m = result.metrics()
    assert {"champion_first_bpb", "challenger_first_bpb"} <= set(m)
