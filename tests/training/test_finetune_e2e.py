import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch

from training.finetune import TRAIN_STATE_FILE, FinetuneRequest, finetune, total_steps_for

EXPECTED_KEYS = {
    *(
        f"{who}_{slice_}_{m}"
        for who in ("champion", "challenger")
        for slice_ in ("new", "retention")
        for m in ("loss", "ppl", "bpb")
    ),
    *(f"{slice_}_eval_{m}" for slice_ in ("new", "retention") for m in ("texts", "tokens", "bytes")),
    "train_tokens",
    "tokens_per_s",
    "wall_s",
    "final_train_loss",
    "steps",
    "train_blocks",
    "global_step",
    "optimizer_resumed",
    "peak_lr",
    "resumed_from_step",
    "stored_bytes",  # bytes of the saved version's files
    *(
        f"selection_{m}"
        for m in (
            "overhead_s",
            "overhead_cpu_s",
            "kept_fraction",
            "weight_entropy",
            "scored_tokens",
            "steps",
            "reference_texts",
        )
    ),  # training.selection; trivial for uniform
}


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def first_update(tmp_path_factory, base_dir, corpus):
    """Base -> v1 with 4 epochs on learnable text; returns (result, parent digest before, out_dir)."""
    from training.config import TrainConfig

    before = tree_digest(base_dir)
    cfg = TrainConfig(
        seq_len=32, batch_size=8, peak_lr=3e-3, epochs=4, bf16=False, threads=1, eval_batch_size=16, log_every=5
    )
    out = tmp_path_factory.mktemp("v1")
    steps_seen = []
    result = finetune(
        FinetuneRequest(
            parent=base_dir,
            train_texts=corpus[:300],
            new_eval_texts=corpus[300:350],
            retention_eval_texts=corpus[350:],
            cfg=cfg,
            out_dir=out,
            on_step=lambda s, loss, lr: steps_seen.append(s),
        )
    )
    return result, before, out, steps_seen


def test_finetune_writes_challenger_and_leaves_parent_untouched(first_update, base_dir):
    result, before, out, _ = first_update
    assert result.output_dir == out
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", TRAIN_STATE_FILE} <= names
    assert tree_digest(base_dir) == before
    state = torch.load(out / TRAIN_STATE_FILE, weights_only=True)
    assert state["global_step"] == result.fit.steps == result.global_step
    assert state["train_config"]["bf16"] is False and state["train_config"]["threads"] == result.threads
    assert set(state["optimizer"]) == {"state", "param_groups"}


def test_finetune_improves_on_new_text_and_reports_stable_metrics(first_update):
    result, _, _, steps_seen = first_update
    metrics = result.metrics()
    assert set(metrics) == EXPECTED_KEYS
    assert all(isinstance(v, float) for v in metrics.values())
    assert result.challenger_new.loss < result.champion_new.loss - 0.3
    assert result.challenger_retention.bits_per_byte < result.champion_retention.bits_per_byte
    assert metrics["steps"] == result.fit.steps == steps_seen[-1]
    assert metrics["optimizer_resumed"] == 0.0
    assert result.device == "cpu" and result.bf16 is False and result.threads >= 1


def test_second_update_carries_optimizer_state(first_update, corpus, tmp_path):
    from training.config import TrainConfig

    _, _, v1, _ = first_update
    before = tree_digest(v1)
    cfg = TrainConfig(seq_len=32, batch_size=8, peak_lr=1e-3, max_steps=3, bf16=False, threads=1)
    result = finetune(FinetuneRequest(parent=v1, train_texts=corpus[:50], cfg=cfg, out_dir=tmp_path / "v2"))
    assert result.optimizer_resumed
    assert result.global_step == first_update[0].global_step + 3
    assert result.champion_new is None and result.challenger_retention is None
    assert not any(k.startswith(("champion_", "challenger_", "new_eval", "retention_eval")) for k in result.metrics())
    assert tree_digest(v1) == before


def test_finetune_rejects_empty_training_text(base_dir, tiny_train_cfg, tmp_path):
    with pytest.raises(ValueError, match="`train_texts` is empty"):
        finetune(
            FinetuneRequest(
                parent=base_dir, train_texts=[], new_eval_texts=["x"], cfg=tiny_train_cfg, out_dir=tmp_path / "out"
            )
        )
    assert not (tmp_path / "out").exists()


def test_finetune_refuses_to_write_into_the_parent(base_dir, tiny_train_cfg, corpus):
    with pytest.raises(ValueError, match="`out_dir`"):
        finetune(
            FinetuneRequest(parent=base_dir, train_texts=corpus[:10], cfg=tiny_train_cfg, out_dir=base_dir / "child")
        )


def test_finetune_rejects_seq_len_beyond_context(base_dir, tiny_train_cfg, corpus, tmp_path):
    cfg = dataclasses.replace(tiny_train_cfg, seq_len=64)
    with pytest.raises(ValueError, match="`seq_len`"):
        finetune(FinetuneRequest(parent=base_dir, train_texts=corpus[:10], cfg=cfg, out_dir=tmp_path / "out"))


def test_total_steps_for(tiny_train_cfg):
    assert total_steps_for(tiny_train_cfg, 100) == 13  # ceil(100 / 8)
    assert total_steps_for(dataclasses.replace(tiny_train_cfg, epochs=2.5), 100) == 32
    assert total_steps_for(dataclasses.replace(tiny_train_cfg, epochs=3), 5) == 3  # batch capped at 5 blocks
    assert total_steps_for(dataclasses.replace(tiny_train_cfg, max_steps=7), 100) == 7
    assert total_steps_for(dataclasses.replace(tiny_train_cfg, epochs=0.01), 1) == 1
