"""The model card: rendered from numbers only, logged to the update's MLflow run by ``model_update`` and linked
from the challenger's Dagster metadata; and the update's metrics linked to both logged models (MLflow 3).

The loop runs for real on one small window (Dagster instance, DuckDB, sqlite MLflow store in a tmp home); the
card is then searched for every record text and injected PII value (the leak search of
tests/assets/test_quality_pii_leak.py, on the card).
"""

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient
from st_helpers import tiny_home, window_records, write_window

from training.model_card import EvalSet, ModelCard, WindowRows, render_model_card

EMAIL = "maria.card.leak@example.org"
LONG = "too long to keep " * 30
KEY = "mc-2025-01"


def test_render_has_every_section_and_only_numbers():
    card = ModelCard(
        model_name="streamtune",
        version="2",
        parent_version="1",
        base={"base_model": "local-gpt2", "model.n_layer": "1"},
        windows=(WindowRows("w1", 10, 1, 8, 2, {"text_too_long": 1, "pii_private_key": 1}, {"EMAIL_ADDRESS": 3}),),
        rows_by_split={"train": 6, "new_eval": 2},
        recipe={"train.peak_lr": "0.003", "replay.fraction": "0.25"},
        gate={"gate.decision": "promoted", "gate.reason": "PASS: new 1.9 < 2.4", "gate.min_improvement": "0"},
        metrics={"champion_new_bpb": 2.4, "challenger_new_bpb": 1.9},
        datasets=(EvalSet("new_eval", 2, "ab" * 32, ("w1",)),),
        cl_metrics={"cl_acc": -1.9},
        promoted=True,
    )
    md = render_model_card(card)
    for heading in (
        "# Model card: streamtune v2",
        "## Model details",
        "## Intended use",
        "## Limits",
        "## Training data",
        "## Quarantine and redaction",
        "## Replay and recipe",
        "## Promotion gate",
        "## Datasets",
        "## Continual-learning metrics",
    ):
        assert heading in md
    assert "| w1 | quarantine | text_too_long | 1 |" in md and "| w1 | redaction | EMAIL_ADDRESS | 3 |" in md
    assert "| new windows | 2.4000 | 1.9000 |" in md and "| cl_acc | -1.9000 |" in md
    assert "| train.peak_lr | 0.003 |" in md and "PASS: new 1.9 < 2.4" in md


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """One window with a redacted email and a quarantined long row, ingested, gated and fine-tuned via Dagster."""
    from assets.checks import WINDOW_CHECKS
    from assets.curate import approved_window, curated_window
    from assets.ingest import raw_window
    from assets.train import TRAINING_ASSETS
    from orchestration.cli.daemon import open_instance, prepare_instance
    from orchestration.partitions import WINDOWS_PARTITION
    from orchestration.resources import build_resources

    settings = tiny_home(tmp_path_factory.mktemp("card") / "home", quality={"max_chars": 200})
    records = [
        *window_records(0, 40),
        {"id": "pii", "text": f"write to {EMAIL} about the parser"},
        {"id": "long", "text": LONG},
    ]
    write_window(settings.paths.landing, f"{KEY}.jsonl", records)
    prepare_instance(settings)
    with open_instance(settings) as instance:
        instance.add_dynamic_partitions(WINDOWS_PARTITION, [KEY])
        dg.materialize(
            [raw_window, curated_window, approved_window, *WINDOW_CHECKS],
            partition_key=KEY,
            resources=build_resources(settings),
            instance=instance,
        )
        result = dg.materialize(TRAINING_ASSETS, resources=build_resources(settings), instance=instance)
        metadata = {
            node: {
                k: v
                for e in result.get_asset_materialization_events()
                if e.asset_key.to_user_string() == node
                for k, v in e.materialization.metadata.items()
            }
            for node in ("challenger_model", "model_update")
        }
    client = MlflowClient(settings.tracking_uri)
    version = client.get_registered_model(settings.model_name).aliases["challenger"]
    mv = client.get_model_version(settings.model_name, version)
    card = client.download_artifacts(mv.run_id, "model_card.md", str(tmp_path_factory.mktemp("dl")))
    return {"settings": settings, "records": records, "metadata": metadata, "card": open(card).read(), "mv": mv}


def test_card_is_logged_with_counts_and_no_record_text(loop):
    card = loop["card"]
    assert f"# Model card: {loop['settings'].model_name} v{loop['mv'].version}" in card
    assert f"| {KEY} | quarantine | text_too_long | 1 |" in card
    assert f"| {KEY} | redaction | EMAIL_ADDRESS | 1 |" in card
    assert "| new_eval | evaluation |" in card and "cl_acc" in card and "train.peak_lr" in card
    leaks = [r["text"] for r in loop["records"] if r["text"] in card] + [v for v in (EMAIL, "maria") if v in card]
    assert not leaks, f"record text in the model card: {leaks[:3]}"
    assert loop["mv"].tags["streamtune.model_card"] == "model_card.md"


def test_card_is_linked_from_the_challenger_and_model_update_metadata(loop):
    for node in ("challenger_model", "model_update"):
        link = loop["metadata"][node]["model_card"]
        assert isinstance(link, dg.UrlMetadataValue)
        assert link.url.endswith(f"/runs/{loop['mv'].run_id}/artifacts/model_card.md")


def test_the_loops_evaluations_are_linked_to_both_logged_models(loop):
    settings = loop["settings"]
    client = MlflowClient(settings.tracking_uri)
    run = client.get_run(loop["mv"].run_id)
    challenger_id = run.outputs.model_outputs[0].model_id
    parent_id = run.inputs.model_inputs[0].model_id
    assert parent_id != challenger_id
    for model_id in (challenger_id, parent_id):
        linked = {(m.key, m.dataset_name) for m in client.get_logged_model(model_id).metrics}
        assert ("eval_bpb", "new_eval") in linked and ("eval_loss", "new_eval") in linked
