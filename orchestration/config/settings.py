"""streamtune settings: one home directory, one settings file, environment overrides.

Resolution order (later wins): defaults < ``<home>/streamtune.toml`` < ``STREAMTUNE_*``
environment variables. The home is ``--home`` / ``STREAMTUNE_HOME`` / ``./.streamtune``.

Every table is parsed once, when the settings load, into its typed dataclass (``Settings.train`` is a
``TrainConfig``, ``Settings.sources.redis`` a ``RedisStreamConfig`` or None, ...) by one validator over
the dataclass fields (``build_config``): an unknown key, a value of the wrong type, a TOML syntax error
or a value the dataclass's own ``__post_init__`` rejects is a ``SettingsError`` naming the file, the
table and the key.

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
    [train]                         # training.config.TrainConfig, plus LaunchConfig's launcher / nproc
    epochs = 1.0
    launcher = "inprocess"          # or "pipes": Dagster Pipes + torchrun over `nproc` processes (DDP)
    nproc = 1
    [gate]                          # training.config.GateConfig
    retention_tolerance = 0.02
    eval_sets = {general = "eval_sets/general.jsonl"}   # fixed general sets (JSONL/Parquet, `text`)
    general_tolerance = 0.02
    [quality]                       # quality.suite.QualityConfig
    max_chars = 2000
    [replay]                        # training.config.ReplayConfig
    fraction = 0.25
    [drift]                         # quality.drift.DriftConfig
    false_alarm_rate = 0.05
    [freshness]                     # orchestration.config.operations.FreshnessConfig (hours; 0 = derived)
    landing_cadence_h = 24
    [alerts]                        # orchestration.config.operations.AlertsConfig
    webhook_url = ""                # Slack-compatible incoming webhook; alerts also go to logs/alerts.jsonl
    [sources.redis]                 # optional stream sources (orchestration.sources); absent = no sensor
    url = "redis://127.0.0.1:6379/0"
    stream = "events"
    [sources.sse]
    url = "https://stream.wikimedia.org/v2/stream/recentchange"
    text_field = "title"
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_origin, get_type_hints

from orchestration.config.operations import AlertsConfig, FreshnessConfig
from orchestration.config.tables import SettingsError, build_config, check_value, read_toml, toml_lines
from orchestration.sources.redis_stream import RedisStreamConfig
from orchestration.sources.sse import SseConfig
from training.config import GateConfig, ModelConfig, ReplayConfig, TrainConfig

if TYPE_CHECKING:
    from quality.drift import DriftConfig
    from quality.suite import QualityConfig

DEFAULT_HOME = ".streamtune"
SETTINGS_FILE = "streamtune.toml"
SECTIONS = ("model", "train", "gate", "quality", "drift", "replay", "sources", "freshness", "alerts", "schedule")
"""Tables of ``streamtune.toml``; each becomes the ``Settings`` attribute of the same name."""
NON_NEGATIVE = ("landing_archive_days", "run_outputs_retention_days", "landing_settle_s")
"""Top-level day counts and seconds that must be >= 0 (0 = no age limit; ``landing_settle_s``: no wait)."""
LAUNCH_KEYS = ("launcher", "nproc")
"""``[train]`` keys that choose how the fine-tune is launched (``LaunchConfig``), not ``TrainConfig`` fields."""


def resolve_home(home: str | Path | None = None) -> Path:
    """The streamtune home as an absolute path: argument, else ``STREAMTUNE_HOME``, else ``./.streamtune``."""
    raw = home or os.environ.get("STREAMTUNE_HOME") or DEFAULT_HOME
    return Path(raw).expanduser().resolve()


class _UnderRoot:
    """A ``HomePaths`` location: ``root / name``, read as an attribute."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, paths: HomePaths | None, owner: type) -> Any:
        return self if paths is None else paths.root / self.name


@dataclass(frozen=True)
class HomePaths:
    """Every location under one streamtune home."""

    root: Path
    landing = _UnderRoot("landing")
    """Incoming window files (the landing zone)."""
    landing_archive = _UnderRoot("archive/landing")
    """Landing files of curated windows (``landing_retention = "archive"``)."""
    warehouse = _UnderRoot("warehouse.duckdb")
    """The DuckDB file."""
    mlflow_db = _UnderRoot("mlflow.db")
    mlartifacts = _UnderRoot("mlartifacts")
    dagster_home = _UnderRoot("dagster")
    snapshots = _UnderRoot("snapshots")
    """Parquet training snapshots handed from DuckDB to the training step."""
    models = _UnderRoot("models")
    """Local model directories: built bases, downloaded champions, challengers in training."""
    logs = _UnderRoot("logs")
    data_docs = _UnderRoot("data_docs")
    """Great Expectations Data Docs, one site per window (``data_docs/<window_key>/index.html``)."""
    expectations = _UnderRoot("expectations")
    """The GX suite that judged each window, as GX JSON (``expectations/<window_key>.json``)."""

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    def registry_copy(self, version: str) -> Path:
        """The local copy of registered model version ``version`` (``ModelRegistry.local_copy``):
        ``models/registry/v<version>``, shared by the fine-tune's parent and the drift monitor's scorer."""
        return self.models / "registry" / f"v{version}"

    def ensure(self) -> HomePaths:
        for d in (self.root, self.landing, self.mlartifacts, self.dagster_home, self.snapshots, self.models, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        return self


@dataclass(frozen=True)
class LaunchConfig:
    """How the fine-tune is launched: ``[train] launcher`` and ``[train] nproc``."""

    launcher: Literal["inprocess", "pipes"] = "inprocess"
    """"inprocess" = inside the Dagster run's process; "pipes" = Dagster Pipes + torchrun over ``nproc``
    processes."""
    nproc: int = 1
    """Processes of a Pipes launch (DDP when > 1)."""

    def __post_init__(self) -> None:
        if self.launcher not in ("inprocess", "pipes"):
            raise ValueError(f"[train] launcher must be 'inprocess' or 'pipes', got {self.launcher!r}")
        if not isinstance(self.nproc, int) or isinstance(self.nproc, bool) or self.nproc < 1:
            raise ValueError(f"[train] nproc must be an int >= 1, got {self.nproc!r}")


@dataclass(frozen=True)
class ScheduleConfig:
    """``[schedule]``: when a fine-tune starts (``orchestration.pipeline.trigger.should_finetune``)."""

    policy: Literal["every_window", "cadence", "drift"] = "every_window"
    """"every_window" (default, the loop as before): ``new_window_sensor`` fine-tunes on every approved window,
    ``drift_sensor`` adds one on confirmed drift, ``periodic_finetune`` on its cron; "cadence": only the
    ``finetune_cron`` schedule; "drift": a confirmed drift alarm, the staleness bound or the schedule, whichever
    comes first (new windows accumulate)."""
    staleness_bound_h: float = 0.0
    """Under "drift": hours since the last fine-tune (before the first one: since the first profiled window)
    after which a profiled window requests one (trigger ``staleness``); 0 = no time bound (``[drift]
    max_windows_without_retrain`` still bounds it in windows)."""

    def __post_init__(self) -> None:
        if self.staleness_bound_h < 0:
            raise ValueError(f"[schedule] staleness_bound_h must be >= 0 (0 = off), got {self.staleness_bound_h!r}")


@dataclass(frozen=True)
class SourcesConfig:
    """``[sources.redis]`` / ``[sources.sse]``: stream sources that land windows (``orchestration.sources``);
    each sensor exists only when its table is present (an empty table counts as absent)."""

    redis: RedisStreamConfig | None = None
    sse: SseConfig | None = None


def _section_types() -> dict[str, type]:
    """The dataclass of each table of ``streamtune.toml`` (``SECTIONS``, plus ``launch``)."""
    # lazy: quality.suite and quality.drift import polars, numpy and scipy (~0.5 s), which neither
    # `streamtune --help` nor importing this module needs
    from quality.drift import DriftConfig
    from quality.suite import QualityConfig

    return {
        "model": ModelConfig,
        "train": TrainConfig,
        "launch": LaunchConfig,
        "gate": GateConfig,
        "quality": QualityConfig,
        "drift": DriftConfig,
        "replay": ReplayConfig,
        "sources": SourcesConfig,
        "freshness": FreshnessConfig,
        "alerts": AlertsConfig,
        "schedule": ScheduleConfig,
    }


def _default(section: str) -> Any:
    return field(default_factory=lambda: _section_types()[section]())


@dataclass(frozen=True)
class Settings:
    """All user-facing settings of a streamtune home."""

    home: Path
    text_field: str = "text"
    """Name of the record field that holds the text."""
    id_field: str = "id"
    ts_field: str = "ts"
    base_model: str = ""
    """Hugging Face model id or local ``save_pretrained`` path of the base model (Llama, Qwen2, Mistral, GPT-NeoX,
    GPT-2 families); "" builds the small local GPT-style model unless ``streamtune base pretrain`` registered the
    stand-in base first."""
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
    landing_retention: Literal["archive", "delete", "keep"] = "archive"
    """What happens to a window's landing file once the window is curated: moved to ``archive/landing/``
    (mtime kept; ``forget`` scrubs it there), deleted, or kept in ``landing/``."""
    landing_symlinks: Literal["refuse", "inside"] = "refuse"
    """Symbolic links in ``landing/``: "refuse" (logged, never read), or "inside": accept one whose target
    is a regular file inside the landing folder."""
    landing_settle_s: float = 60.0
    """A closed landing file is handed out once its size and mtime held still between two landing-sensor ticks
    (5 s or more apart), or at first sight when it was last modified at least this many seconds ago. 0: at
    first sight always, for producers that write a temporary name and rename it when complete (``streamtune
    replay``, the stream sources): saves one sensor tick (about 5 s) per window."""
    landing_archive_days: float = 30.0
    """Days a landing file stays in ``archive/landing/`` after it was archived; older ones are deleted by the
    landing sensor (``orchestration.sources.landing.prune_archive``). 0 = no age limit."""
    finetune_trigger_interval_s: int = 5
    quarantine_retention_days: float = 30.0
    """Days a quarantined row keeps its raw text/metadata (curated.quarantine is the one place with
    raw values); older rows are blanked at the next curation (``streamtune quarantine purge``)."""
    run_outputs_retention_days: float = 7.0
    """Days the per-run outputs of an ended, unsuccessful run (``RunScopedIOManager``: what a re-execution from
    failure loads) are kept; a successful run's are deleted when it ends (sensor ``run_outputs_cleanup``).
    0 = no age limit."""
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
    run_workers: Literal["forkserver", "spawn"] = "forkserver"
    """How the code server starts a run's process: "forkserver" forks it from a process that imported the code
    location and its libraries once (``orchestration.run_workers``); "spawn" is Dagster's fresh interpreter per run,
    which re-imports Dagster, GX, torch, transformers and MLflow in every run (bench/results/freshness_spawn.md
    against freshness.md: an ingest run 14.4 s against 4.5 s, freshness ratio 7.6 against 2.4)."""
    samples_per_update: int = 3
    """Sample generations from each challenger shown in Dagster metadata and kept in MLflow (0 = none)."""
    model: ModelConfig = _default("model")
    """[model]: shape of the locally built base model."""
    train: TrainConfig = _default("train")
    """[train] without ``launcher`` / ``nproc``: one fine-tuning update."""
    launch: LaunchConfig = _default("launch")
    """[train] ``launcher`` / ``nproc``: how the fine-tune is launched."""
    gate: GateConfig = _default("gate")
    """[gate]: promotion rule."""
    quality: QualityConfig = _default("quality")
    """[quality]: thresholds of the quality gate."""
    drift: DriftConfig = _default("drift")
    """[drift]: drift monitor and drift_sensor."""
    replay: ReplayConfig = _default("replay")
    """[replay]: window-balanced replay buffer (size, fraction, seed)."""
    sources: SourcesConfig = _default("sources")
    """[sources.redis] / [sources.sse]: stream sources."""
    freshness: FreshnessConfig = _default("freshness")
    """[freshness]: Dagster freshness policies of approved_window and champion_model."""
    alerts: AlertsConfig = _default("alerts")
    """[alerts]: alert webhook and log file."""
    schedule: ScheduleConfig = _default("schedule")
    """[schedule]: trigger policy (every_window | cadence | drift) and staleness bound."""

    @property
    def paths(self) -> HomePaths:
        return HomePaths(self.home)

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or self.paths.mlflow_tracking_uri


@functools.cache
def _scalar_hints() -> dict[str, Any]:
    """Top-level keys of ``streamtune.toml`` (every Settings field but the home and the tables) -> type."""
    hints = get_type_hints(Settings, localns={cls.__name__: cls for cls in _section_types().values()})
    return {f.name: hints[f.name] for f in dataclasses.fields(Settings) if f.name not in {"home", "launch", *SECTIONS}}


def load_settings(home: str | Path | None = None) -> Settings:
    """Load the settings of a home (file, then ``STREAMTUNE_<NAME>`` environment variables).

    Raises:
        SettingsError: a TOML syntax error, an unknown key, a value of the wrong type or one the table's
            dataclass rejects; the message names the file (or environment variable), table and key.
    """
    root = resolve_home(home)
    path = root / SETTINGS_FILE
    data = read_toml(path) if path.exists() else {}
    scalars = _scalar_hints()
    unknown = sorted(set(data) - set(scalars) - set(SECTIONS))
    if unknown:
        raise SettingsError(
            f"{path}: unknown settings {unknown}; known: {sorted(scalars)} and "
            "[model] [train] [gate] [quality] [drift] [replay] [sources.*] [freshness] [alerts] [schedule]"
        )
    values = {k: _scalar(check_value(v, scalars[k], str(path), k), scalars[k]) for k, v in data.items() if k in scalars}
    for name, tp in scalars.items():
        env = os.environ.get(f"STREAMTUNE_{name.upper()}")
        if env is not None:
            values[name] = _from_env(f"STREAMTUNE_{name.upper()}", env, tp)
    for key in NON_NEGATIVE:
        if values.get(key, 0) < 0:
            where = f"STREAMTUNE_{key.upper()}" if f"STREAMTUNE_{key.upper()}" in os.environ else str(path)
            raise SettingsError(f"{where}: {key} must be >= 0, got {values[key]!r}")
    return Settings(home=root, **values, **_parse_tables(data, str(path)))


def _parse_tables(data: Mapping[str, Any], file: str) -> dict[str, Any]:
    """Each table of ``data`` (missing ones empty) built into its dataclass; ``[train]`` also yields ``launch``."""
    kinds = _section_types()
    parsed: dict[str, Any] = {}
    for name in SECTIONS:
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise SettingsError(f"{file}: {name} must be a table ([{name}]), got {table!r}")
        if name == "train":
            launch = {k: v for k, v in table.items() if k in LAUNCH_KEYS}
            parsed["launch"] = build_config(LaunchConfig, launch, file, "train")
            table = {k: v for k, v in table.items() if k not in LAUNCH_KEYS}
        if name == "quality" and isinstance(table.get("expectations_file"), str):  # relative to the home
            table = {
                **table,
                "expectations_file": str(Path(file).parent / Path(table["expectations_file"]).expanduser()),
            }
        parsed[name] = build_config(kinds[name], table, file, name, also_known=LAUNCH_KEYS if name == "train" else ())
    return parsed


def _scalar(value: Any, tp: Any) -> Any:
    """Top-level float settings hold floats (``eval_fraction = 1`` reads as 1.0, as it always did)."""
    return float(value) if tp is float else value


def _from_env(name: str, raw: str, tp: type) -> Any:
    """A top-level setting (str, int, float or a ``Literal`` of strings) from its environment variable ``name``."""
    if get_origin(tp) is Literal:
        return check_value(raw, tp, "environment", name)
    try:
        return tp(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: cannot read {raw!r} as {tp.__name__}") from exc


def write_settings(home: Path, values: dict[str, Any]) -> Path:
    """Write ``streamtune.toml`` into a home: top-level scalars, then each table and its sub-tables
    (``[sources.redis]``); lists and tuples as TOML arrays. ``load_settings`` reads it back.

    Returns:
        The file written.
    """
    home.mkdir(parents=True, exist_ok=True)
    path = home / SETTINGS_FILE
    path.write_text("\n".join(toml_lines(values, "")) + "\n")
    return path
