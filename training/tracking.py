"""MLflow tracking and model registry for one model lineage: a run per update, a version per run.

Every update is one MLflow run (params, final metrics, the loss/lr curve as step metrics, tags) whose
model is logged with the ``transformers`` flavor and registered as a new version of one registered
model. Versions move between roles with aliases (``base``, ``champion``, ``challenger``) and carry the
gate's decision as tags; stages are deprecated since MLflow 2.9. The AdamW state of each update is a
run artifact (``train_state/train_state.pt``) so the next update can continue from it.

MLflow 3.17 notes (verified, see docs/research/mlflow_training.md):

- runs and the registry go through an explicit ``MlflowClient``; only ``mlflow.transformers.log_model``
  needs the fluent API, so the process-global tracking URI is set around that call and restored;
- the experiment gets an explicit artifact location, else a sqlite-backed experiment writes to
  ``./mlruns`` under the current directory;
- ``pip_requirements`` is passed explicitly (the defaults require torchvision and start a subprocess);
- versions are registered with the logged model's artifact location as source: with a ``models:/m-..``
  source the sqlite registry store resolves it through a default ``MlflowClient()``, which creates
  ``./mlflow.db`` in the current directory.

Set ``HF_HUB_OFFLINE=1`` when offline: ``log_model`` otherwise tries to fetch a Hub model card.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before mlflow is imported

from datetime import UTC

import mlflow  # noqa: E402
import mlflow.transformers  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.models import Model  # noqa: E402

from training.modeling import load_model  # noqa: E402

__all__ = ["TRAIN_STATE_ARTIFACT", "DatasetRef", "ModelRegistry", "pip_requirements"]

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
        import json

        dataset = Dataset(
            name=self.name,
            digest=self.digest[:36],
            source_type="local",
            source=json.dumps({"uri": self.source}),
            schema=json.dumps({"mlflow_colspec": [{"type": "string", "name": "text", "required": True}]}),
            profile=json.dumps({"num_rows": int(self.rows), "windows": list(self.windows)}),
        )
        return DatasetInput(dataset=dataset, tags=[InputTag("mlflow.data.context", self.context)])


def pip_requirements() -> list[str]:
    """Pinned requirements of a logged model, from the installed versions (local torch tags dropped)."""
    import safetensors
    import tokenizers
    import torch
    import transformers

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
    from mlflow.tracking._tracking_service import utils as tracking_utils

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


class ModelRegistry:
    """One experiment and one registered model in an MLflow tracking/registry store.

    Args:
        tracking_uri: e.g. ``sqlite:////abs/mlflow.db`` or ``http://mlflow:5000`` (also the registry URI).
        artifact_location: artifact root for a newly created experiment, a URI (``file:///abs/mlartifacts``,
            ``s3://...``) or a local path (made absolute). Ignored (with a warning) if the experiment exists
            with another location.
        experiment: experiment name.
        model_name: registered model name.
    """

    def __init__(
        self,
        tracking_uri: str,
        artifact_location: str,
        experiment: str = "streamtune",
        model_name: str = "streamtune-lm",
    ) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_location = _as_uri(artifact_location) if artifact_location else ""  # "": server default
        self.experiment = experiment
        self.model_name = model_name
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._experiment_id: str | None = None

    # experiment and runs ---------------------------------------------------------------------------

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

    def log_update(
        self,
        *,
        run_name: str,
        model_dir: Path,
        params: dict,
        metrics: dict[str, float],
        curve: list[tuple[int, float, float]],
        tags: dict[str, str],
        artifacts: dict[str, Path] | None = None,
        description: str = "",
        run_id: str | None = None,
        datasets: list[DatasetRef] | None = None,
    ) -> tuple[str, str]:
        """Log one update as a run, register its model as a new version and alias it ``challenger``.

        The run gets ``params`` (values stringified), ``metrics`` (step 0; also attached to the logged
        model), ``curve`` as step metrics ``train_loss`` and ``lr``, ``tags`` and ``description``; the model
        in ``model_dir`` (``save_pretrained`` layout) logged with ``mlflow.transformers.log_model`` under
        ``name="model"``; ``model_dir/train_state.pt`` (if present) as ``train_state/train_state.pt``;
        each ``artifacts`` entry (file or directory) under its key as artifact directory. The version gets
        ``tags`` and ``description``. The run ends FINISHED, or FAILED if anything raises.
        Takes ~1-2 s for a few-MB model on a local sqlite store.

        Args:
            run_id: log into this RUNNING run (from ``start_run``, e.g. one that recorded system metrics
                during training) instead of creating one.
            datasets: logged as the run's dataset inputs (name, digest, source, row count; no rows).

        Returns:
            ``(run_id, version)``.
        """
        run_id, version = self._log_and_register(
            run_name=run_name,
            model_dir=model_dir,
            params=params,
            metrics=metrics,
            curve=curve,
            tags=tags,
            artifacts=artifacts,
            description=description,
            run_id=run_id,
            datasets=datasets,
        )
        self.set_alias("challenger", version)
        return run_id, version

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
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

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

    def register_base(self, *, model_dir: Path, params: dict, tags: dict) -> tuple[str, str]:
        """Log the base model as run ``base-model`` and register it with aliases ``base`` and ``champion``.

        Registers a new version on every call: check ``version_for_alias("base")`` first.

        Returns:
            ``(run_id, version)``.
        """
        run_id, version = self._log_and_register(
            run_name="base-model",
            model_dir=model_dir,
            params=params,
            metrics={},
            curve=[],
            tags=tags,
            artifacts=None,
            description="base model of the lineage",
        )
        self.set_alias("base", version)
        self.set_alias("champion", version)
        return run_id, version

    def log_artifact_file(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload one local file (or directory) into the run's artifacts, under ``artifact_path`` if given."""
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def _log_and_register(
        self,
        *,
        run_name: str,
        model_dir: Path,
        params: dict,
        metrics: dict[str, float],
        curve: list[tuple[int, float, float]],
        tags: dict[str, str],
        artifacts: dict[str, Path] | None,
        description: str,
        run_id: str | None = None,
        datasets: list[DatasetRef] | None = None,
    ) -> tuple[str, str]:
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir} is not a save_pretrained model directory (no config.json)")
        str_tags = {str(k): str(v) for k, v in tags.items()}
        run_tags = dict(str_tags)
        if description:
            run_tags["mlflow.note.content"] = description
        if run_id is None:
            run_id = self.client.create_run(self.experiment_id(), run_name=run_name, tags=run_tags).info.run_id
        else:
            for key, value in run_tags.items():
                self.client.set_tag(run_id, key, value)
        try:
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

            # An absolute name_or_path makes the flavor's Hub model-card/license lookups fail locally
            # (not a valid repo id) instead of querying the network for a relative name like "base".
            model, tokenizer = load_model(model_dir.resolve())
            with _fluent_tracking_uri(self.tracking_uri):
                with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
                    info = mlflow.transformers.log_model(
                        {"model": model, "tokenizer": tokenizer},
                        name="model",
                        task="text-generation",
                        pip_requirements=pip_requirements(),
                    )
            version = self._register(info.model_id, run_id, str_tags, description)
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")
        return run_id, version

    # registry ----------------------------------------------------------------------------------------

    def _ensure_registered_model(self) -> None:
        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            try:
                self.client.create_registered_model(self.model_name)
            except MlflowException as e2:  # created concurrently
                if e2.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise

    def _register(self, model_id: str, run_id: str, tags: dict[str, str], description: str) -> str:
        self._ensure_registered_model()
        source = self.client.get_logged_model(model_id).artifact_location
        mv = self.client.create_model_version(
            self.model_name,
            source=source,
            run_id=run_id,
            tags=tags,
            description=description or None,
            model_id=model_id,
        )
        return str(mv.version)

    def version_for_alias(self, alias: str) -> str | None:
        """Version number holding ``alias``, or None if the alias or the registered model does not exist."""
        try:
            registered = self.client.get_registered_model(self.model_name)
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        version = registered.aliases.get(alias)
        return None if version is None else str(version)

    def set_alias(self, alias: str, version: str) -> None:
        """Point ``alias`` at ``version`` (atomic; moves it if it was elsewhere)."""
        self.client.set_registered_model_alias(self.model_name, alias, str(version))

    def tag_version(self, version: str, tags: dict[str, str]) -> None:
        """Set tags on a model version (values stringified)."""
        for key, value in tags.items():
            self.client.set_model_version_tag(self.model_name, str(version), str(key), str(value))

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        """Add metrics to an existing (finished) run, e.g. the continual-learning summary computed later."""
        import time as _time

        from mlflow.entities import Metric

        now = int(_time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for chunk in _chunks(batch, 1000):
            self.client.log_batch(run_id, metrics=chunk)

    def rollback_champion(self, to_version: str, reason: str, actor: str = "") -> str | None:
        """Move the ``champion`` alias back to ``to_version`` and record why on both versions.

        Tags on ``to_version``: ``rollback.restored_from`` (the replaced champion), ``rollback.reason``,
        ``rollback.at`` (UTC ISO-8601), ``rollback.actor``; on the replaced champion:
        ``rollback.rolled_back_to``, ``rollback.reason``, ``rollback.at``.

        Returns:
            The version that was champion before (None if there was none).

        Raises:
            ValueError: if ``to_version`` does not exist or already is the champion.
        """
        from datetime import datetime

        try:
            self.client.get_model_version(self.model_name, str(to_version))
        except MlflowException as e:
            raise ValueError(f"model version {to_version} of {self.model_name!r} does not exist") from e
        previous = self.version_for_alias("champion")
        if previous == str(to_version):
            raise ValueError(f"version {to_version} already is the champion")
        at = datetime.now(UTC).isoformat(timespec="seconds")
        self.set_alias("champion", str(to_version))
        self.tag_version(
            str(to_version),
            {
                "rollback.restored_from": previous or "",
                "rollback.reason": reason,
                "rollback.at": at,
                "rollback.actor": actor,
            },
        )
        if previous is not None:
            self.tag_version(
                previous, {"rollback.rolled_back_to": str(to_version), "rollback.reason": reason, "rollback.at": at}
            )
        return previous

    def version_tags(self, version: str) -> dict[str, str]:
        """Tags of a model version."""
        return dict(self.client.get_model_version(self.model_name, str(version)).tags)

    def version_run_id(self, version: str) -> str | None:
        """Id of the run that produced ``version``."""
        return self.client.get_model_version(self.model_name, str(version)).run_id or None

    def download_version(self, version: str, dst: Path) -> Path:
        """Materialise ``version`` as a ``save_pretrained`` directory that ``load_model`` reads.

        Copies the transformers flavor's weight directory (``config.json``, ``model.safetensors``, ...)
        and its tokenizer component byte for byte into ``dst``, so logits are identical to the logged model.

        Returns:
            ``dst`` (created if missing; existing files of the same names are overwritten).

        Raises:
            MlflowException: if the version does not exist.
            FileNotFoundError: if the version is not a transformers-flavor model with a tokenizer.
        """
        dst = Path(dst)
        dst.mkdir(parents=True, exist_ok=True)
        source = self.client.get_model_version_download_uri(self.model_name, str(version))
        staging = dst / ".mlflow-download"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=source, dst_path=str(staging), tracking_uri=self.tracking_uri
                )
            )
            flavor = Model.load(str(local / "MLmodel")).flavors.get("transformers")
            if flavor is None or "tokenizer" not in flavor.get("components", []):
                raise FileNotFoundError(
                    f"version {version} of {self.model_name!r} is not a transformers model with a tokenizer"
                )
            for sub in (local / flavor.get("model_binary", "model"), local / "components" / "tokenizer"):
                for item in sub.iterdir():
                    if item.is_file():
                        shutil.copy2(item, dst / item.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return dst

    def download_train_state(self, version: str, dst: Path) -> Path | None:
        """Download the optimizer state logged with ``version``'s run to ``dst/train_state.pt``.

        ``download_version(v, d)`` followed by ``download_train_state(v, d)`` gives a parent directory from
        which ``finetune`` carries the AdamW state over.

        Returns:
            The local file, or None if the run has no ``train_state/train_state.pt`` (e.g. the base model).
        """
        run_id = self.version_run_id(version)
        if run_id is None:
            return None
        available = {a.path for a in self.client.list_artifacts(run_id, "train_state")}
        if TRAIN_STATE_ARTIFACT not in available:
            return None
        dst = Path(dst)
        dst.mkdir(parents=True, exist_ok=True)
        staging = dst / ".mlflow-download"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=TRAIN_STATE_ARTIFACT,
                dst_path=str(staging),
                tracking_uri=self.tracking_uri,
            )
            target = dst / "train_state.pt"
            shutil.move(local, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target
