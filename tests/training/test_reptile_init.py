"""``[train] reptile_init``: the update's Reptile meta-initialisation (``training.reptile.meta_init``) inside
``training.finetune.finetune`` on a tiny GPT-2: it runs after the champion is scored, costs the steps it says,
changes what the update starts from, and is refused where it cannot run."""

import dataclasses

import pytest
from conftest import make_summaries

from training.config import TrainConfig
from training.finetune import finetune
from training.finetune_types import FinetuneRequest
from training.modeling import load_model


def _request(base_dir, out, cfg, corpus, meta_tasks):
    return FinetuneRequest(
        parent=base_dir,
        train_texts=corpus[:80],
        cfg=cfg,
        out_dir=out,
        new_eval_texts=corpus[80:100],
        meta_tasks=meta_tasks,
    )


def test_reptile_init_runs_before_the_update_and_is_logged(tmp_path, base_dir, corpus, tiny_train_cfg):
    cfg = dataclasses.replace(tiny_train_cfg, max_steps=4, reptile_init=True, reptile_iters=3, reptile_inner_steps=2)
    tasks = {"w-01": make_summaries(60, seed=1), "w-02": make_summaries(60, seed=2), "w-03": []}
    with_meta = finetune(_request(base_dir, tmp_path / "meta", cfg, corpus, tasks))
    plain = finetune(_request(base_dir, tmp_path / "plain", dataclasses.replace(cfg, reptile_init=False), corpus, {}))

    m = with_meta.extra
    assert (m["reptile_tasks"], m["reptile_steps"]) == (2.0, 6.0)  # "w-03" has no rows: left out
    assert m["reptile_tokens"] > 0 and m["reptile_inner_loss"] > 0 and m["reptile_wall_s"] >= 0
    assert "reptile_steps" not in plain.extra
    # the champion is scored before the meta-initialisation: both updates see the same champion bits/byte
    assert with_meta.champion_new.bits_per_byte == pytest.approx(plain.champion_new.bits_per_byte)
    assert with_meta.fit.steps == plain.fit.steps == 4
    a, _ = load_model(tmp_path / "meta")
    b, _ = load_model(tmp_path / "plain")
    diff = max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert diff > 1e-4  # the update started from the meta-learned weights


def test_reptile_init_without_tasks_changes_nothing(tmp_path, base_dir, corpus, tiny_train_cfg):
    cfg = dataclasses.replace(tiny_train_cfg, max_steps=2, reptile_init=True)
    result = finetune(_request(base_dir, tmp_path / "out", cfg, corpus, {}))
    assert "reptile_steps" not in result.extra  # a first update has no replayed windows yet


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"reptile_iters": 0}, "reptile_iters"),
        ({"reptile_inner_steps": -1}, "reptile_inner_steps"),
        ({"lora_r": 4}, "reptile_init"),
        ({"adapter": "lora", "lora_r": 4}, "reptile_init"),
        ({"dp_epsilon": 8.0}, "reptile_init"),
    ],
)
def test_reptile_init_settings_are_checked(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(reptile_init=True, **bad)
