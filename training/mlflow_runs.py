"""MLflow run logging for one experiment: runs, params, metrics, dataset inputs, artifacts, system metrics.

``ExperimentRuns`` is the run half of ``training.tracking.ModelRegistry`` (which adds the registered model,
its versions and aliases); everything goes through an explicit ``MlflowClient``. Only
``mlflow.transformers.log_model`` needs the fluent API, so the process-global tracking URI is set around
that call and restored (``_fluent_tracking_uri``). Notes on MLflow 3.17 in ``training.tracking``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before mlflow is imported

import mlflow  # noqa: E402
import mlflow.transformers  # noqa: E402
import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelInput, Metric, Param  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor  # noqa: E402
from mlflow.tracking._tracking_service import utils as tracking_utils  # noqa: E402

from training.modeling import load_model  # noqa: E402

__all__ = [
    "EVAL_DATASETS",
    "TRAIN_STATE_ARTIFACT",
    "DatasetRef",
    "ExperimentRuns",
    "eval_metrics_by_model",
    "pip_requirements",
]

log = logging.getLogger(__name__)

TRAIN_STATE_ARTIFACT = "train_state/train_state.pt"
"""Run-relative artifact path of the optimizer state written by ``finetune``."""


@dataclass(frozen=True)
class DatasetRef:
    """A dataset an update used, logged as an MLflow dataset input (never its rows).

    Attributes:
        name: e.g. ``"train"``, ``"new_eval"``; MLflow shows it in the run's Datasets column.
        digest: content hash (hex), so two runs on the same data show the same digest.
        source: URI of the data (e.g. the snapshot's Parquet file).
        rows: number of rows (int >= 0).
        windows: window keys the rows come from.
        context: MLflow's ``mlflow.data.context`` input tag: ``"training"`` or ``"evaluation"``.
    """

    name: str
    digest: str
    source: str
    rows: int
    windows: tuple[str, ...] = ()
    context: str = "training"

    def to_input(self) -> DatasetInput:
        """The MLflow entity: schema = one ``text`` string column, profile = rows and windows."""
        dataset = Dataset(
            name=self.name,
            digest=self.digest[:36],
            source_type="local",
            source=json.dumps({"uri": self.source}),
            schema=json.dumps({"mlflow_colspec": [{"type": "string", "name": "text", "required": True}]}),
            profile=json.dumps({"num_rows": int(self.rows), "windows": list(self.windows)}),
        )
        return DatasetInput(dataset=dataset, tags=[InputTag("mlflow.data.context", self.context)])


EVAL_DATASETS = {"new": "new_eval", "retention": "retention_eval", "first": "first_eval"}
"""Evaluation slice of ``FinetuneResult.metrics()`` keys -> the ``DatasetRef.name`` it was measured on."""


def eval_metrics_by_model(metrics: dict[str, float]) -> dict[str, dict[str, dict[str, float]]]:
    """Split an update's flat metrics by the model and the dataset they were measured with.

    ``{champion|challenger}_{new|retention|first}_{loss|ppl|bpb}`` (nats/token, perplexity, bits/byte)
    become ``{"champion" | "challenger": {dataset name (EVAL_DATASETS): {"eval_loss" | "eval_ppl" |
    "eval_bpb": value}}}``: the same metric names for both models, so MLflow 3's Models view lines up
    champion and challenger per dataset. Other keys are ignored.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, value in metrics.items():
        parts = key.split("_")
        if len(parts) != 3 or parts[0] not in ("champion", "challenger") or parts[1] not in EVAL_DATASETS:
            continue
        if parts[2] in ("loss", "ppl", "bpb"):
            out.setdefault(parts[0], {}).setdefault(EVAL_DATASETS[parts[1]], {})[f"eval_{parts[2]}"] = float(value)
    return out


def pip_requirements() -> list[str]:
    """Pinned requirements of a logged model, from the installed versions (local torch tags dropped)."""
    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"transformers=={transformers.__version__}",
        f"tokenizers=={tokenizers.__version__}",
        f"safetensors=={safetensors.__version__}",
    ]


def _as_uri(location: str | Path) -> str:
    """A URI for ``location``: kept if it has a scheme, else an absolute local path as ``file://``."""
    s = str(location)
    if "://" in s or s.startswith("file:"):
        return s
    return Path(s).resolve().as_uri()


@contextlib.contextmanager
def _fluent_tracking_uri(uri: str) -> Iterator[None]:
    """Point the fluent API (process-global state) at ``uri`` for the duration; not thread-safe."""
    previous, previous_env = tracking_utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # None also unsets MLFLOW_TRACKING_URI: put the user's value back
        if previous_env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class ExperimentRuns:
    """Runs of one experiment in an MLflow tracking store.

    Args:
        tracking_uri: e.g. ``sqlite:////abs/mlflow.db`` or ``http://mlflow:5000`` (also the registry URI).
        artifact_location: artifact root for a newly created experiment, a URI (``file:///abs/mlartifacts``,
            ``s3://...``) or a local path (made absolute); "" = the server's default. Ignored (with a
            warning) if the experiment exists with another location.
        experiment: experiment name.
    """

    def __init__(self, tracking_uri: str, artifact_location: str, experiment: str = "streamtune") -> None:
        self.tracking_uri = tracking_uri
        self.artifact_location = _as_uri(artifact_location) if artifact_location else ""  # "": server default
        self.experiment = experiment
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._experiment_id: str | None = None

    def experiment_id(self) -> str:
        """Id of the experiment, created with ``artifact_location`` if missing.

        Raises:
            ValueError: if an experiment of that name exists but is deleted.
        """
        if self._experiment_id is not None:
            return self._experiment_id
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            try:
                self._experiment_id = self.client.create_experiment(
                    self.experiment, artifact_location=self.artifact_location or None
                )
                return self._experiment_id
            except MlflowException as e:  # another process created it first
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp = self.client.get_experiment_by_name(self.experiment)
                assert exp is not None, f"experiment {self.experiment!r} vanished after a create race"
        if exp.lifecycle_stage == "deleted":
            raise ValueError(
                f"MLflow experiment {self.experiment!r} is deleted; restore it or choose another `experiment` name"
            )
        if self.artifact_location and exp.artifact_location.rstrip("/") != self.artifact_location.rstrip("/"):
            log.warning(
                "experiment %r stores artifacts at %s, not %s",
                self.experiment,
                exp.artifact_location,
                self.artifact_location,
            )
        self._experiment_id = exp.experiment_id
        return self._experiment_id

    def start_run(self, run_name: str, tags: dict[str, str] | None = None) -> str:
        """Create a RUNNING run in the experiment (for ``log_update(run_id=...)``); returns its id."""
        tags = {str(k): str(v) for k, v in (tags or {}).items()}
        return self.client.create_run(self.experiment_id(), run_name=run_name, tags=tags).info.run_id

    def fail_run(self, run_id: str) -> None:
        """Mark a run FAILED (an update that raised before ``log_update``)."""
        self.client.set_terminated(run_id, "FAILED")

    @contextlib.contextmanager
    def system_metrics(self, run_id: str, interval_s: float = 5.0) -> Iterator[None]:
        """Log MLflow system metrics (``system/cpu_utilization_percentage``, memory, disk, network, GPU
        when present) into ``run_id`` every ``interval_s`` seconds while the block runs.

        Uses ``mlflow.system_metrics.SystemMetricsMonitor`` (needs ``psutil``; a missing psutil
        logs a warning and records nothing). The run must be RUNNING.
        """
        try:
            monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, tracking_uri=self.tracking_uri)
        except Exception as e:  # psutil missing or an unsupported platform: training goes on without
            log.warning("system metrics disabled: %s", e)
            yield
            return
        monitor.start()
        try:
            yield
        finally:
            monitor.finish()
            if getattr(monitor, "_logging_step", 1) == 0:  # shorter than one interval: log one sample anyway
                try:
                    monitor.collect_metrics()
                    monitor.publish_metrics(monitor.aggregate_metrics())
                    monitor.mlflow_logger.flush()
                except Exception as e:  # best effort, never fail an update over system metrics
                    log.warning("could not log system metrics: %s", e)

    def log_artifact_file(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload one local file (or directory) into the run's artifacts, under ``artifact_path`` if given."""
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0, model_id: str | None = None) -> None:
        """Add metrics to an existing (finished) run, e.g. the continual-learning summary computed later;
        with ``model_id`` they are also linked to that logged model (MLflow 3 Models view)."""
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step, model_id=model_id) for k, v in metrics.items()]
        for chunk in _chunks(batch, 1000):
            self.client.log_batch(run_id, metrics=chunk)

    def log_model_metrics(
        self, run_id: str, model_id: str, metrics: dict[str, float], dataset: DatasetRef | None = None, step: int = 0
    ) -> None:
        """Log ``metrics`` in run ``run_id`` linked to the logged model ``model_id`` (MLflow 3 ``LoggedModel``)
        and, if given, to ``dataset`` (its name and digest, as logged by ``DatasetRef.to_input``): they show
        in the model's metrics and in the Models view, per dataset. The run must not be deleted."""
        now = int(time.time() * 1000)
        linked = {"dataset_name": dataset.name, "dataset_digest": dataset.digest[:36]} if dataset else {}
        batch = [Metric(str(k), float(v), now, step, model_id=model_id, **linked) for k, v in metrics.items()]
        for chunk in _chunks(batch, 1000):
            self.client.log_batch(run_id, metrics=chunk)

    def link_evaluations(
        self,
        run_id: str,
        metrics: dict[str, float],
        model_ids: dict[str, str | None],
        datasets: list[DatasetRef] | None = None,
    ) -> None:
        """The update's evaluation metrics linked to each model and dataset (``eval_metrics_by_model``).

        Args:
            model_ids: ``{"challenger": id, "champion": id or None}`` logged-model ids; a None skips that
                model. The champion's model is also logged as an input model of the run (lineage).
            datasets: the run's dataset inputs; an evaluation on a dataset not among them is linked to the
                model only.
        """
        refs = {d.name: d for d in datasets or []}
        for role, by_dataset in eval_metrics_by_model(metrics).items():
            model_id = model_ids.get(role)
            if model_id:
                for name, values in by_dataset.items():
                    self.log_model_metrics(run_id, model_id, values, refs.get(name))
        parent = model_ids.get("champion")
        if parent:
            self.client.log_inputs(run_id, models=[LoggedModelInput(parent)])

    def _log_run_data(
        self,
        run_id: str,
        *,
        model_dir: Path,
        params: dict,
        metrics: dict[str, float],
        curve: list[tuple[int, float, float]],
        artifacts: dict[str, Path] | None,
        datasets: list[DatasetRef] | None,
    ) -> None:
        """Dataset inputs, params (stringified), metrics (step 0), ``curve`` as step metrics ``train_loss``
        and ``lr``, ``model_dir/train_state.pt`` as ``TRAIN_STATE_ARTIFACT``, and each ``artifacts`` entry."""
        if datasets:
            self.client.log_inputs(run_id, datasets=[d.to_input() for d in datasets])
        now = int(time.time() * 1000)
        param_list = [Param(str(k), str(v)) for k, v in params.items()]
        metric_list = [Metric(str(k), float(v), now, 0) for k, v in metrics.items()]
        for step, loss, lr in curve:
            metric_list += [
                Metric("train_loss", float(loss), now, int(step)),
                Metric("lr", float(lr), now, int(step)),
            ]
        for chunk in _chunks(param_list, 100):  # log_batch limits: 100 params, 1000 metrics per call
            self.client.log_batch(run_id, params=chunk)
        for chunk in _chunks(metric_list, 1000):
            self.client.log_batch(run_id, metrics=chunk)
        if (model_dir / "train_state.pt").is_file():
            self.client.log_artifact(run_id, str(model_dir / "train_state.pt"), "train_state")
        for name, path in (artifacts or {}).items():
            self.log_artifact_file(run_id, path, name)

    def _log_model(self, run_id: str, model_dir: Path) -> str:
        """Log the ``save_pretrained`` model in ``model_dir`` into the run with the ``transformers`` flavor
        under ``name="model"``; returns the logged model's id."""
        # An absolute name_or_path makes the flavor's Hub model-card/license lookups fail locally
        # (not a valid repo id) instead of querying the network for a relative name like "base".
        model, tokenizer = load_model(model_dir.resolve())
        with (
            _fluent_tracking_uri(self.tracking_uri),
            mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None),
        ):
            info = mlflow.transformers.log_model(
                {"model": model, "tokenizer": tokenizer},
                name="model",
                task="text-generation",
                pip_requirements=pip_requirements(),
            )
        return info.model_id
