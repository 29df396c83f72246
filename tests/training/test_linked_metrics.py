"""MLflow 3 linked metrics: an update's evaluations are linked to the challenger's and the champion's logged
models and to the dataset they were measured on, on a real sqlite MLflow store in a temporary directory."""

import pytest

mlflow = pytest.importorskip("mlflow")

from training.mlflow_runs import eval_metrics_by_model  # noqa: E402
from training.tracking import DatasetRef, ModelRegistry  # noqa: E402

METRICS = {
    "champion_new_loss": 3.0,
    "champion_new_ppl": 20.1,
    "champion_new_bpb": 2.5,
    "challenger_new_loss": 2.0,
    "challenger_new_ppl": 7.4,
    "challenger_new_bpb": 1.5,
    "champion_retention_bpb": 2.2,
    "challenger_retention_bpb": 2.3,
    "tokens_per_s": 1000.0,
}


def test_eval_metrics_by_model_splits_by_model_and_dataset():
    by = eval_metrics_by_model(METRICS)
    assert by["champion"]["new_eval"] == {"eval_loss": 3.0, "eval_ppl": 20.1, "eval_bpb": 2.5}
    assert by["challenger"]["retention_eval"] == {"eval_bpb": 2.3}
    assert set(by) == {"champion", "challenger"}  # tokens_per_s and the like are not evaluations


@pytest.fixture(scope="module")
def linked(tmp_path_factory, base_dir):
    root = tmp_path_factory.mktemp("linked")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        registry = ModelRegistry(f"sqlite:///{root}/mlflow.db", f"file://{root}/mlartifacts")
        _, base_version = registry.register_base(model_dir=base_dir, params={"source": "local"}, tags={})
        datasets = [
            DatasetRef("new_eval", "a" * 64, "file:///tmp/new_eval.parquet", 10, ("w1",), "evaluation"),
            DatasetRef("retention_eval", "b" * 64, "file:///tmp/retention_eval.parquet", 8, ("w0",), "evaluation"),
        ]
        run_id, version = registry.log_update(
            run_name="update w1",
            model_dir=base_dir,
            params={"lr": 1e-3},
            metrics=METRICS,
            curve=[],
            tags={},
            datasets=datasets,
            parent_version=base_version,
        )
        registry.log_metrics(run_id, {"cl_acc": -1.9}, model_id=registry.model_id(version))
        yield registry, run_id, base_version, version


def _by_dataset(model) -> dict[tuple[str, str | None], float]:
    return {(m.key, m.dataset_name): m.value for m in model.metrics or []}


def test_challenger_and_champion_metrics_are_linked_to_their_models_and_datasets(linked):
    registry, run_id, base_version, version = linked
    client = registry.client
    challenger = client.get_logged_model(registry.model_id(version))
    champion = client.get_logged_model(registry.model_id(base_version))
    assert _by_dataset(challenger)[("eval_bpb", "new_eval")] == 1.5
    assert _by_dataset(challenger)[("eval_bpb", "retention_eval")] == 2.3
    assert _by_dataset(champion)[("eval_bpb", "new_eval")] == 2.5
    assert _by_dataset(champion)[("eval_loss", "new_eval")] == 3.0
    assert _by_dataset(challenger)[("cl_acc", None)] == -1.9  # logged later by record_update
    digests = {m.dataset_digest for m in challenger.metrics if m.dataset_name == "new_eval"}
    assert digests == {"a" * 36}  # the digest DatasetRef.to_input logged as the run's input
    run = client.get_run(run_id)
    assert {i.model_id for i in run.inputs.model_inputs} == {champion.model_id}  # the parent is an input model


def test_models_view_search_compares_champion_and_challenger(linked):
    registry, _, base_version, version = linked
    found = registry.client.search_logged_models(
        experiment_ids=[registry.experiment_id()],
        filter_string="metrics.eval_bpb > 0",
        datasets=[{"dataset_name": "new_eval"}],
        order_by=[{"field_name": "metrics.eval_bpb", "ascending": True, "dataset_name": "new_eval"}],
    )
    ids = [m.model_id for m in found]
    assert ids == [registry.model_id(version), registry.model_id(base_version)]  # challenger (1.5) before champion
