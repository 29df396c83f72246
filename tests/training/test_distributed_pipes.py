"""challenger_model materialized through Dagster Pipes: torchrun with 2 gloo ranks in external processes."""

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient
from st_helpers import TINY_SETTINGS, tiny_home, window_records, write_window

from assets.checks import WINDOW_CHECKS  # noqa: E402
from assets.curate import approved_window, curated_window  # noqa: E402
from assets.ingest import raw_window  # noqa: E402
from assets.train import TRAINING_ASSETS, challenger_beats_champion  # noqa: E402
from orchestration.partitions import WINDOWS_PARTITION  # noqa: E402
from orchestration.pipes import torchrun_command  # noqa: E402
from orchestration.resources import build_resources  # noqa: E402


@pytest.mark.slow
def test_challenger_model_materializes_through_pipes_with_two_ranks(tmp_path):
    train = {**TINY_SETTINGS["train"], "launcher": "pipes", "nproc": 2, "max_steps": 6, "bf16": False}
    home = tiny_home(tmp_path / "home", train=train)
    assert (home.launch.launcher, home.launch.nproc) == ("pipes", 2)
    assert "launcher" not in home.train.to_dict()
    write_window(home.paths.landing, "s-01.jsonl", window_records(0, 80))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(WINDOWS_PARTITION, ["s-01"])
        ingested = dg.materialize(
            [raw_window, curated_window, approved_window, *WINDOW_CHECKS],
            partition_key="s-01",
            resources=build_resources(home),
            instance=instance,
        )
        assert ingested.success
        result = dg.materialize(
            [*TRAINING_ASSETS, challenger_beats_champion],
            resources=build_resources(home),
            instance=instance,
            selection=TRAINING_ASSETS,
            raise_on_error=True,
        )
        assert result.success
        value = result.output_for_node("challenger_model")
        metadata = result.asset_materializations_for_node("challenger_model")[0].metadata
        logs = [e.message for e in instance.all_logs(result.run_id) if e.message]

    # rank 0 spoke to Dagster through Pipes: its log lines arrived in the run's event log
    assert any("fine-tuning on 2 process(es), backend gloo" in m for m in logs), logs[-20:]
    assert any("step 6: train loss" in m for m in logs)
    assert value["metrics"]["steps"] == 6.0 and value["metrics"]["challenger_new_loss"] > 0
    # ...and its reported materialization is part of the asset's
    assert metadata["launcher"].value == "pipes" and metadata["world_size"].value == 2
    assert metadata["backend"].value == "gloo" and metadata["train_tokens_per_s"].value > 0
    client = MlflowClient(home.tracking_uri)
    version = client.get_model_version(home.model_name, value["version"])
    run = client.get_run(version.run_id)
    assert run.data.params["launcher"] == "pipes" and run.data.params["nproc"] == "2"
    # the loss curve was logged once, live, by rank 0 alone (not again by the asset)
    history = client.get_metric_history(version.run_id, "train_loss")
    assert [m.step for m in history] == [5, 6]
    # rank 0 saved the challenger; the registry holds it
    assert version.tags["gate.decision"] in {"promoted", "rejected"}


def test_torchrun_command_runs_the_pipes_entry():
    cmd = torchrun_command(3, python="/x/python")
    assert cmd == [
        "/x/python",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=3",
        "-m",
        "orchestration.pipeline.train_entry",
    ]
    with pytest.raises(ValueError):
        torchrun_command(0)
