"""Deployment profiles: the embedded defaults, or a team's PostgreSQL + MLflow tracking server.

No Dagster imports (the CLI, the daemon wrapper and the tests read this before any instance exists).

streamtune picks the profile from settings alone, no code changes:

=========================  ==================================  =====================================
what                        embedded (default)                   team
=========================  ==================================  =====================================
Dagster instance storage    sqlite files under DAGSTER_HOME      PostgreSQL: ``dagster_pg_url``
MLflow tracking + registry  ``sqlite:///<home>/mlflow.db``       ``mlflow_tracking_uri`` = ``http(s)://``
MLflow artifacts            ``<home>/mlartifacts`` (file://)     the server's proxied store
                                                                 (``mlflow-artifacts:/``, S3, ...)
=========================  ==================================  =====================================

Set them in ``<home>/streamtune.toml`` (``dagster_pg_url = "..."``, ``mlflow_tracking_uri = "..."``) or,
better for secrets, as environment variables ``STREAMTUNE_DAGSTER_PG_URL`` and
``STREAMTUNE_MLFLOW_TRACKING_URI``. The generated ``dagster.yaml`` never contains the password: its
``storage.postgres.postgres_url`` reads ``{env: STREAMTUNE_DAGSTER_PG_URL}``, which
``orchestration.cli.daemon.instance_env`` sets for every Dagster process of the home.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from orchestration.config.settings import Settings

if TYPE_CHECKING:
    from training.tracking import ModelRegistry

PG_URL_ENV = "STREAMTUNE_DAGSTER_PG_URL"
"""Environment variable the generated ``dagster.yaml`` reads the Postgres URL from."""

POSTGRES_STORAGE_YAML = f"""
# Team profile (dagster_pg_url / {PG_URL_ENV} is set): runs, event log, schedules, sensor
# cursors and dynamic partitions live in PostgreSQL (dagster-postgres), not in sqlite files.
storage:
  postgres:
    postgres_url:
      env: {PG_URL_ENV}
"""


def is_server_uri(uri: str) -> bool:
    """True for an MLflow tracking *server* URI (``http://``, ``https://``, ``databricks``)."""
    scheme = urlsplit(uri).scheme.lower()
    return scheme in {"http", "https", "databricks"} or uri.startswith("databricks")


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and ``streamtune status``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class Profile:
    """Which stores a home uses (``profile_of(settings)``)."""

    name: str  # "embedded" | "team" | "mixed"
    dagster_storage: str  # "sqlite" | "postgres"
    mlflow_tracking_uri: str
    mlflow_artifact_location: str  # "" = the tracking server decides (proxied artifacts)

    def describe(self) -> str:
        return (
            f"{self.name} profile: Dagster storage {self.dagster_storage}, MLflow "
            f"{redact_url(self.mlflow_tracking_uri)}"
            + (
                f", artifacts {self.mlflow_artifact_location}"
                if self.mlflow_artifact_location
                else ", artifacts proxied by the tracking server"
            )
        )


def artifact_location(settings: Settings) -> str:
    """Artifact root for a new experiment: the ``mlflow_artifact_location`` setting if given; else ""
    for a tracking server (it proxies artifacts, so clients need no store credentials or volume); else
    the home's ``mlartifacts`` folder as a ``file://`` URI."""
    explicit = getattr(settings, "mlflow_artifact_location", "")
    if explicit:
        return explicit
    if is_server_uri(settings.tracking_uri):
        return ""
    return settings.paths.mlartifacts.as_uri()


def open_registry(
    settings: Settings | None = None,
    *,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    artifact_root: str | None = None,
    model_name: str | None = None,
) -> ModelRegistry:
    """The home's MLflow experiment and registered model: the one place that builds a ``ModelRegistry``.

    From ``settings``: ``tracking_uri``, ``artifact_location(settings)``, ``experiment``, ``model_name``;
    each keyword overrides its value (e.g. ``experiment=settings.experiment + "-drift"``). The Dagster
    ``MlflowResource`` passes all four keywords and no settings.

    Raises:
        ValueError: no ``settings`` and no ``tracking_uri``.
    """
    # lazy: training.tracking imports mlflow and torch; this module is read at Dagster code-location load
    from training.tracking import ModelRegistry

    if settings is None and tracking_uri is None:
        raise ValueError("open_registry needs `settings` or a `tracking_uri`")
    fields = {"artifact_location": ""}  # no settings, no artifact_root: the tracking server decides
    if settings is not None:
        fields = {
            "tracking_uri": settings.tracking_uri,
            "artifact_location": artifact_location(settings),
            "experiment": settings.experiment,
            "model_name": settings.model_name,
        }
    overrides = {
        "tracking_uri": tracking_uri,
        "artifact_location": artifact_root,
        "experiment": experiment,
        "model_name": model_name,
    }
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return ModelRegistry(**fields)


def profile_of(settings: Settings) -> Profile:
    pg = bool(settings.dagster_pg_url)
    server = is_server_uri(settings.tracking_uri)
    name = "team" if (pg and server) else ("embedded" if not (pg or settings.mlflow_tracking_uri) else "mixed")
    return Profile(
        name=name,
        dagster_storage="postgres" if pg else "sqlite",
        mlflow_tracking_uri=settings.tracking_uri,
        mlflow_artifact_location=artifact_location(settings),
    )


def instance_yaml(settings: Settings, template: str) -> str:
    """The home's ``dagster.yaml``: the template, plus Postgres storage in the team profile.

    Raises:
        ValueError: ``dagster_pg_url`` is not a ``postgresql://`` (or ``postgres://``) URL.
    """
    if not settings.dagster_pg_url:
        return template
    scheme = urlsplit(settings.dagster_pg_url).scheme
    if not scheme.startswith("postgres"):
        raise ValueError(f"dagster_pg_url must be a postgresql:// URL, got scheme {scheme!r}")
    return template.rstrip("\n") + "\n" + POSTGRES_STORAGE_YAML


def dagster_pg_url(url: str) -> str:
    """``url`` with the psycopg2 driver named (``postgresql+psycopg2://``) unless a driver is given.

    dagster-postgres 0.29 sends ``NOTIFY run_events, %(notify_id)s``, which only psycopg2's client-side
    parameter interpolation accepts; SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3 when it is
    installed (it is: the MLflow server uses it), and every event write then fails with a syntax error.
    """
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        return urlunsplit(parts._replace(scheme="postgresql+psycopg2"))
    return url


def profile_env(settings: Settings) -> dict[str, str]:
    """Environment variables every Dagster process of the home needs for its profile."""
    return {PG_URL_ENV: dagster_pg_url(settings.dagster_pg_url)} if settings.dagster_pg_url else {}
