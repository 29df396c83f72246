"""Dagster resources: the DuckDB warehouse, the MLflow registry, and the home's settings.

Each resource is a typed ``ConfigurableResource`` over a plain-Python class
(``orchestration.store.warehouse.Warehouse``, ``training.tracking.ModelRegistry``,
``orchestration.config.settings.Settings``), so tests and the CLI use the same code
without Dagster.
"""

from __future__ import annotations

import contextlib
import pickle
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from orchestration.config.profiles import artifact_location, open_registry
from orchestration.config.settings import Settings, load_settings
from orchestration.store.warehouse import Warehouse

if TYPE_CHECKING:
    from training.tracking import ModelRegistry


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB file. Every asset that uses it runs in the ``duckdb`` pool (limit 1)."""

    path: str

    def warehouse(self) -> Warehouse:
        wh = Warehouse(self.path)
        wh.init_schema()
        return wh


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking store and model registry (sqlite file by default, or a server URI)."""

    tracking_uri: str
    artifact_location: str = ""
    """Artifact root for a new experiment; "" = the tracking server's default (proxied artifacts)."""
    experiment: str = "streamtune"
    model_name: str = "streamtune-lm"

    def registry(self) -> ModelRegistry:
        """The ``training.tracking.ModelRegistry`` of these fields (``open_registry``; mlflow imported here)."""
        return open_registry(
            tracking_uri=self.tracking_uri,
            artifact_root=self.artifact_location,
            experiment=self.experiment,
            model_name=self.model_name,
        )


class StreamtuneResource(dg.ConfigurableResource):
    """The streamtune home: settings file, landing zone, snapshot and model folders."""

    home: str

    def settings(self) -> Settings:
        return load_settings(self.home)


class _RunScopedPickles(dg.IOManager):
    """Pickles under ``<root>/<run id>/outputs/<asset key path>``; loads from the run that produced the input."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, run_id: str, asset_key: dg.AssetKey) -> Path:
        return run_outputs_dir(self.root, run_id) / Path(*asset_key.path)

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        path = self._path(context.run_id, context.asset_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(pickle.dumps(obj))
        tmp.replace(path)  # atomic: a run killed while writing leaves the old value or none

    def load_input(self, context: dg.InputContext):
        upstream = context.upstream_output
        path = self._path(upstream.run_id, context.asset_key)
        if not path.is_file():
            raise FileNotFoundError(
                f"{context.asset_key.to_user_string()} of run {upstream.run_id} is not stored at {path}: "
                "materialize it in this run (a re-execution loads it from the run that produced it)"
            )
        return pickle.loads(path.read_bytes())


class RunScopedIOManager(dg.ConfigurableIOManagerFactory):
    """Keeps each unpartitioned asset output per run, under the instance's storage folder (``<storage>/<run
    id>/outputs/<asset key>``), and loads an input from the run that produced it (a re-execution from failure:
    the parent run). Dagster's default IO manager keeps one file per asset key, which the next run overwrites,
    so a retried fine-tune reloaded a later run's snapshot; the training assets use this one (issue 20).

    The files are removed when no re-execution needs them: ``clear_run_outputs`` when a run succeeds (its own
    and its ancestors'), ``prune_run_outputs`` for ended runs older than a retention period (the sensor
    ``run_outputs_cleanup``, ``orchestration.sensors.build_run_outputs_sensor``)."""

    def create_io_manager(self, context: dg.InitResourceContext) -> dg.IOManager:
        return _RunScopedPickles(Path(context.instance.storage_directory()))


RUN_OUTPUTS = "outputs"
"""Sub-folder of ``<storage>/<run id>/`` with ``RunScopedIOManager``'s pickles (the run folder also holds Dagster's
compute logs, which stay)."""


def run_outputs_dir(storage: Path, run_id: str) -> Path:
    """``<storage>/<run id>/outputs``: where ``RunScopedIOManager`` keeps the outputs of run ``run_id``."""
    return Path(storage) / run_id / RUN_OUTPUTS


def _remove_outputs(storage: Path, run_id: str) -> bool:
    """Delete ``run_outputs_dir(storage, run_id)`` (and the run folder when nothing else is left in it)."""
    folder = run_outputs_dir(storage, run_id)
    if not folder.is_dir():
        return False
    shutil.rmtree(folder)
    with contextlib.suppress(OSError):
        folder.parent.rmdir()  # only when empty: compute logs stay
    return True


def _is_run_id(name: str) -> bool:
    try:
        uuid.UUID(name)
    except ValueError:
        return False
    return True


def clear_run_outputs(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Delete the stored outputs of run ``run_id``, which succeeded, and of its ended ancestors (the runs it
    re-executed, ``parent_run_id`` chain): nothing re-executes them any more.

    Returns:
        The run ids whose outputs folder was removed (``run_id`` first).
    """
    storage, removed, seen = Path(instance.storage_directory()), [], set()
    run = instance.get_run_by_id(run_id)
    while run is not None and run.run_id not in seen:
        seen.add(run.run_id)
        if (run.run_id == run_id or run.is_finished) and _remove_outputs(storage, run.run_id):
            removed.append(run.run_id)
        run = instance.get_run_by_id(run.parent_run_id) if run.parent_run_id else None
    return removed


def prune_run_outputs(instance: dg.DagsterInstance, retention_days: float, now: float | None = None) -> list[str]:
    """Delete the stored outputs of every run that ended more than ``retention_days`` days before ``now``
    (a failed run nobody re-executed), or that the instance no longer knows and whose folder is that old.
    Runs still queued or running keep theirs.

    Args:
        retention_days: age in days (float) after the run's end; 0 = no age limit (nothing pruned).
        now: the clock in epoch seconds (``time.time()`` when None).

    Returns:
        The run ids whose outputs folder was removed.

    Raises:
        ValueError: ``retention_days`` is negative.
    """
    if retention_days < 0:
        raise ValueError(f"run_outputs_retention_days must be >= 0 (0 = no age limit), got {retention_days}")
    if retention_days == 0:
        return []
    now = time.time() if now is None else now
    cutoff = now - retention_days * 86400.0
    storage, removed = Path(instance.storage_directory()), []
    if not storage.is_dir():
        return removed
    for folder in sorted(storage.glob(f"*/{RUN_OUTPUTS}")):
        run_id = folder.parent.name
        if not _is_run_id(run_id):
            continue  # not a run folder (e.g. an asset key of another IO manager)
        record = instance.get_run_record_by_id(run_id)
        if record is None:
            ended = folder.stat().st_mtime
        elif record.dagster_run.is_finished:
            ended = record.end_time or record.update_timestamp.timestamp()
        else:
            continue
        if ended < cutoff and _remove_outputs(storage, run_id):
            removed.append(run_id)
    return removed


def build_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    """The resources of a home, as bound in ``orchestration.definitions``."""
    settings = settings or load_settings()
    paths = settings.paths
    return {
        "warehouse": WarehouseResource(path=str(paths.warehouse)),
        "mlflow": MlflowResource(
            tracking_uri=settings.tracking_uri,
            artifact_location=artifact_location(settings),  # "" with a tracking server: its proxied store
            experiment=settings.experiment,
            model_name=settings.model_name,
        ),
        "streamtune": StreamtuneResource(home=str(settings.home)),
        "run_io_manager": RunScopedIOManager(),
    }
