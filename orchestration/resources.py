"""Dagster resources: the DuckDB warehouse, the MLflow registry, and the home's settings.

Each resource is a typed ``ConfigurableResource`` over a plain-Python class
(``orchestration.store.warehouse.Warehouse``, ``training.tracking.ModelRegistry``,
``orchestration.config.settings.Settings``), so tests and the CLI use the same code
without Dagster.
"""

from __future__ import annotations

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
    }
