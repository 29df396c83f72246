"""``open_registry``: the one place a ``ModelRegistry`` is built, from a home's settings or explicit fields."""

from __future__ import annotations

import pytest
from st_helpers import tiny_home

from orchestration.config.profiles import artifact_location, open_registry


def test_open_registry_uses_the_home_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("STREAMTUNE_MLFLOW_TRACKING_URI", raising=False)
    settings = tiny_home(tmp_path / "home")
    registry = open_registry(settings)
    assert registry.tracking_uri == settings.tracking_uri
    assert registry.artifact_location == artifact_location(settings) == settings.paths.mlartifacts.as_uri()
    assert (registry.experiment, registry.model_name) == (settings.experiment, settings.model_name)


def test_open_registry_overrides_the_experiment_only(tmp_path, monkeypatch):
    monkeypatch.delenv("STREAMTUNE_MLFLOW_TRACKING_URI", raising=False)
    settings = tiny_home(tmp_path / "home")
    drift = open_registry(settings, experiment=settings.experiment + "-drift")
    assert drift.experiment == settings.experiment + "-drift"
    assert (drift.tracking_uri, drift.model_name) == (settings.tracking_uri, settings.model_name)


def test_open_registry_from_explicit_fields_as_the_dagster_resource_builds_it(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    registry = open_registry(tracking_uri=uri, artifact_root="", experiment="e", model_name="m")
    assert (registry.tracking_uri, registry.artifact_location, registry.experiment, registry.model_name) == (
        uri,
        "",
        "e",
        "m",
    )
    with pytest.raises(ValueError, match="tracking_uri"):
        open_registry()
