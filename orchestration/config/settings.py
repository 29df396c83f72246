"""streamtune settings: one home directory, one settings file, environment overrides.

Resolution order (later wins): defaults < ``<home>/streamtune.toml`` < ``STREAMTUNE_*``
environment variables. The home is ``--home`` / ``STREAMTUNE_HOME`` / ``./.streamtune``.

No Dagster imports: the CLI and the Dagster code location both read settings here.

``streamtune.toml`` example::

    text_field = "text"
    base_model = ""                 # "" builds the local GPT-style base; or a HF id / local path
    finetune_cron = "0 */6 * * *"
    max_windows_per_update = 0      # 0 = every pending window in one update
    eval_fraction = 0.1
    retention_rows = 512

    [model]                         # training.config.ModelConfig
    n_layer = 4
    [train]                         # training.config.TrainConfig
    epochs = 1.0
    launcher = "inprocess"          # or "pipes": Dagster Pipes + torchrun over `nproc` processes (DDP)
    nproc = 1
    [gate]                          # training.config.GateConfig
    retention_tolerance = 0.02
    [quality]                       # quality.suite.QualityConfig
    max_chars = 2000
    [replay]                        # training.config.ReplayConfig
    fraction = 0.25
    [drift]                         # quality.drift.DriftConfig
    false_alarm_rate = 0.05
    [sources.redis]                 # optional stream sources (orchestration.sources); absent = no sensor
    url = "redis://127.0.0.1:6379/0"
    stream = "events"
    [sources.sse]
    url = "https://stream.wikimedia.org/v2/stream/recentchange"
    text_field = "title"
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_HOME = ".streamtune"
SETTINGS_FILE = "streamtune.toml"


def resolve_home(home: str | Path | None = None) -> Path:
    """The streamtune home as an absolute path: argument, else ``STREAMTUNE_HOME``, else ``./.streamtune``."""
    raw = home or os.environ.get("STREAMTUNE_HOME") or DEFAULT_HOME
    return Path(raw).expanduser().resolve()


@dataclass(frozen=True)
class HomePaths:
    """Every location under one streamtune home."""

    root: Path

    @property
    def landing(self) -> Path:
        """Incoming window files (the landing zone)."""
        return self.root / "landing"

    @property
    def warehouse(self) -> Path:
        """The DuckDB file."""
        return self.root / "warehouse.duckdb"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def mlartifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def snapshots(self) -> Path:
        """Parquet training snapshots handed from DuckDB to the training step."""
        return self.root / "snapshots"

    @property
    def models(self) -> Path:
        """Local model directories: built bases, downloaded champions, challengers in training."""
        return self.root / "models"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def data_docs(self) -> Path:
        """Great Expectations Data Docs, one site per window (``data_docs/<window_key>/index.html``)."""
        return self.root / "data_docs"

    def ensure(self) -> HomePaths:
        for d in (self.root, self.landing, self.mlartifacts, self.dagster_home, self.snapshots, self.models, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        return self


@dataclass(frozen=True)
class Settings:
    """All user-facing settings of a streamtune home."""

    home: Path
    text_field: str = "text"
    """Name of the record field that holds the text."""
    id_field: str = "id"
    ts_field: str = "ts"
    base_model: str = ""
    """Hugging Face model id or local path of the base model; "" builds the small local GPT-style model."""
    finetune_cron: str = "0 */6 * * *"
    """Cron of the ``periodic_finetune`` schedule (UTC)."""
    max_windows_per_update: int = 0
    """At most this many pending windows per fine-tune update (0 = all)."""
    eval_fraction: float = 0.1
    """Share of each window's rows held out for evaluation (by record hash)."""
    retention_rows: int = 512
    """Held-out rows of earlier windows used to measure retention (forgetting)."""
    landing_interval_s: int = 5
    """Minimum seconds between landing-sensor ticks."""
    finetune_trigger_interval_s: int = 5
    quarantine_retention_days: float = 30.0
    """Days a quarantined row keeps its raw text/metadata (curated.quarantine is the one place with
    raw values); older rows are blanked at the next curation (``streamtune quarantine purge``)."""
    mlflow_tracking_uri: str = ""
    """"" = the home's sqlite store; else a tracking server URI (team profile: ``http://mlflow:5000``)."""
    mlflow_artifact_location: str = ""
    """Artifact root of a newly created experiment; "" = the home's mlartifacts folder, or with a tracking
    server its own (proxied) artifact store. See ``orchestration.config.profiles``."""
    dagster_pg_url: str = ""
    """"" = the Dagster instance on sqlite files in the home; else a ``postgresql://`` URL (team profile,
    dagster-postgres). Prefer the ``STREAMTUNE_DAGSTER_PG_URL`` environment variable for the password."""
    experiment: str = "streamtune"
    model_name: str = "streamtune-lm"
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    """Where users open the MLflow UI (``streamtune ui`` serves it here); Dagster metadata links to runs there."""
    owners: str = "team:ml-platform"
    """Comma-separated Dagster asset owners (e-mail addresses or ``team:<name>``)."""
    samples_per_update: int = 3
    """Sample generations from each challenger shown in Dagster metadata and kept in MLflow (0 = none)."""
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    drift: dict[str, Any] = field(default_factory=dict)
    replay: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Any] = field(default_factory=dict)
    """[sources.redis] / [sources.sse]: stream sources that land windows (``orchestration.sources``);
    each sensor exists only when its table is present."""
    """[replay]: training.config.ReplayConfig (window-balanced replay buffer: size, fraction, seed)."""
    """[drift]: quality.drift.DriftConfig (drift monitor and drift_sensor)."""

    @property
    def paths(self) -> HomePaths:
        return HomePaths(self.home)

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or self.paths.mlflow_tracking_uri

    def model_config(self):
        from training.config import ModelConfig

        return ModelConfig(**self.model)

    def train_config(self):
        from training.config import TrainConfig

        return TrainConfig(**{k: v for k, v in self.train.items() if k not in LAUNCH_KEYS})

    def train_launch(self) -> tuple[str, int]:
        """``(launcher, nproc)`` of the fine-tune from ``[train] launcher`` ("inprocess" | "pipes") and
        ``[train] nproc`` (processes of a Pipes launch; DDP when > 1).

        Raises:
            ValueError: an unknown launcher or nproc < 1.
        """
        launcher = str(self.train.get("launcher", "inprocess"))
        nproc = self.train.get("nproc", 1)
        if launcher not in ("inprocess", "pipes"):
            raise ValueError(f"[train] launcher must be 'inprocess' or 'pipes', got {launcher!r}")
        if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
            raise ValueError(f"[train] nproc must be an int >= 1, got {nproc!r}")
        return launcher, nproc

    def source_config(self, name: str) -> dict[str, Any] | None:
        """The ``[sources.<name>]`` table (``redis``, ``sse``), or None when that source is not configured."""
        table = self.sources.get(name)
        return dict(table) if table else None

    def gate_config(self):
        from training.config import GateConfig

        return GateConfig(**self.gate)

    def quality_config(self):
        from quality.suite import QualityConfig

        return QualityConfig(**self.quality)

    def replay_config(self):
        from training.config import ReplayConfig

        return ReplayConfig(**self.replay)

    def drift_config(self):
        from quality.drift import DriftConfig

        return DriftConfig(**self.drift)


LAUNCH_KEYS = ("launcher", "nproc")
"""``[train]`` keys that choose how the fine-tune is launched (``Settings.train_launch``), not ``TrainConfig`` fields."""

_SCALARS = {
    f.name: f
    for f in dataclasses.fields(Settings)
    if f.name not in {"home", "model", "train", "gate", "quality", "drift", "replay", "sources"}
}


def _coerce(name: str, value: Any) -> Any:
    kind = type(dataclasses.MISSING if _SCALARS[name].default is dataclasses.MISSING else _SCALARS[name].default)
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"setting {name!r}: cannot read {value!r} as {kind.__name__}") from exc


def load_settings(home: str | Path | None = None) -> Settings:
    """Load the settings of a home (file, then ``STREAMTUNE_<NAME>`` environment variables).

    Raises:
        ValueError: unknown keys in ``streamtune.toml`` or values of the wrong type.
    """
    root = resolve_home(home)
    values: dict[str, Any] = {}
    path = root / SETTINGS_FILE
    if path.exists():
        with path.open("rb") as fh:
            data = tomllib.load(fh)
        unknown = sorted(
            set(data) - set(_SCALARS) - {"model", "train", "gate", "quality", "drift", "replay", "sources"}
        )
        if unknown:
            raise ValueError(
                f"{path}: unknown settings {unknown}; known: {sorted(_SCALARS)} and [model] [train] [gate] [quality] [drift] [replay] [sources.*]"
            )
        for key, value in data.items():
            values[key] = (
                dict(value)
                if key in {"model", "train", "gate", "quality", "drift", "replay", "sources"}
                else _coerce(key, value)
            )
    for name in _SCALARS:
        env = os.environ.get(f"STREAMTUNE_{name.upper()}")
        if env is not None:
            values[name] = _coerce(name, env)
    return Settings(home=root, **values)


def write_settings(home: Path, values: dict[str, Any]) -> Path:
    """Write ``streamtune.toml`` (flat scalars, tables and ``[table.sub]`` sub-tables) into a home."""
    lines: list[str] = []
    tables: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            tables[key] = value
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables.items():
        lines.append(f"\n[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, dict))
        for sub, subtable in table.items():  # [sources.redis] style sub-tables
            if isinstance(subtable, dict):
                lines.append(f"\n[{name}.{sub}]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in subtable.items())
    home.mkdir(parents=True, exist_ok=True)
    path = home / SETTINGS_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
