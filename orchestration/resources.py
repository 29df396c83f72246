"""Dagster resources: the DuckDB warehouse, the MLflow registry, and the home's settings.

Each resource is a typed ``ConfigurableResource`` over a plain-Python class
(``orchestration.store.warehouse.Warehouse``, ``training.tracking.ModelRegistry``,
``orchestration.config.settings.Settings``), so tests and the CLI use the same code
without Dagster.
"""

from __future__ import annotations

import pickle
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
        return self.root / run_id / "outputs" / Path(*asset_key.path)

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
    so a retried fine-tune reloaded a later run's snapshot; the training assets use this one (issue 20)."""

    def create_io_manager(self, context: dg.InitResourceContext) -> dg.IOManager:
        return _RunScopedPickles(Path(context.instance.storage_directory()))


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
