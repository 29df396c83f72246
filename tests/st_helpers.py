"""Helpers for orchestration tests: tiny homes with real DuckDB, MLflow and Dagster stores."""

import json
from pathlib import Path

from orchestration.config.settings import Settings, load_settings, write_settings

TINY_SETTINGS = {
    "landing_interval_s": 1,
    "finetune_trigger_interval_s": 1,
    # tests land windows with `replay` (an atomic rename) or before the sensor runs: no settle tick needed
    "landing_settle_s": 0.0,
    "eval_fraction": 0.2,
    "retention_rows": 64,
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "vocab_size": 300},
    "train": {"epochs": 2.0, "batch_size": 8, "seq_len": 32, "peak_lr": 3e-3, "log_every": 5},
    "gate": {"min_improvement": 0.0, "retention_tolerance": 0.5},
}

TOPICS = [
    "A fast JSON parser for {x} pipelines",
    "Command line tool to manage {x} deployments",
    "Async client library for the {x} API",
    "Utilities for testing {x} applications",
    "MCP server exposing {x} tools to AI agents",
]
THINGS = ["data", "cloud", "kafka", "redis", "postgres", "web", "ml", "image", "audio", "graph"]


def window_records(index: int, n: int = 60) -> list[dict]:
    """Deterministic PyPI-like summaries for window ``index``; every text is distinct (within and
    across windows) so the default exact dedup keeps them all."""
    rows = []
    for i in range(n):
        topic = TOPICS[(i + index) % len(TOPICS)]
        rows.append(
            {
                "id": f"w{index}-{i}",
                "text": topic.format(x=THINGS[(i * 7 + index) % len(THINGS)]) + f" v{index}.{i}",
                "ts": f"2025-{index + 1:02d}-01T00:00:00Z",
                "package": f"pkg{i}",
            }
        )
    return rows


def write_window(directory: Path, name: str, records: list[dict], extra_lines: list[str] = ()) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    return path


def tiny_home(root: Path, **overrides) -> Settings:
    values = {**TINY_SETTINGS, **overrides}
    write_settings(root, values)
    settings = load_settings(root)
    settings.paths.ensure()
    return settings


# Drift settings that let the monitor confirm a shift on small windows (as tests/orchestration/pipeline/
# test_drift_monitor.py's DRIFT): few samples and permutations, a short reference pool.
SMALL_DRIFT = {
    "sample_rows": 100,
    "embed_rows": 40,
    "lm_rows": 32,
    "null_splits": 200,
    "permutations": 200,
    "reference_windows": 3,
    "min_reference_windows": 2,
    "cooldown_s": 3600.0,
}

NEW_TOPIC = [
    "Quantum circuit simulator for {x} qubits with noise models",
    "Bindings to the {x} quantum annealer and its QUBO solver",
]
"""A text source unlike ``TOPICS``: what a mid-stream shift switches to."""


def stable_records(index: int, n: int = 60) -> list[dict]:
    """Window ``index`` of a stream with no drift by construction: the same ``TOPICS`` x ``THINGS`` mix in every
    window, each text made distinct by a pseudo-random number (no window-specific token, unlike
    ``window_records``, whose window index in every text is itself a lexical change)."""
    rows = []
    for i in range(n):
        j = index * n + i
        rows.append(
            {
                "id": f"w{index}-{i}",
                "text": TOPICS[i % len(TOPICS)].format(x=THINGS[(i * 7) % len(THINGS)])
                + f" rev {(j * 7919 + 13) % 100003}",
                "ts": f"2025-{index + 1:02d}-01T00:00:00Z",
            }
        )
    return rows


def shifted_records(index: int, n: int = 60) -> list[dict]:
    """Window ``index`` after the text source changed: ``NEW_TOPIC`` texts only, all distinct."""
    return [
        {
            "id": f"q{index}-{i}",
            "text": NEW_TOPIC[i % len(NEW_TOPIC)].format(x=f"lab{i % 7}") + f" rev {index}.{i}",
            "ts": f"2025-{index + 1:02d}-01T00:00:00Z",
        }
        for i in range(n)
    ]


NEVER_CRON = "0 0 1 1 *"
"""A ``finetune_cron`` that fires once a year: ``periodic_finetune`` is out of the way of a test."""


def drift_policy_home(root: Path, *, max_windows_without_retrain: int, recipe: str = "fixed") -> Settings:
    """A tiny home under ``[schedule] policy = "drift"``: fine-tunes start on a confirmed drift alarm or after
    ``max_windows_without_retrain`` profiled windows (0 = never), nothing else (no per-window fine-tunes, the
    schedule once a year, ``staleness_bound_h`` 1,000 hours: set, and counted from the first profile, but never
    reached in a test). ``min_reference_windows = 1``: the second window can already raise an alarm."""
    drift = {**SMALL_DRIFT, "min_reference_windows": 1, "max_windows_without_retrain": max_windows_without_retrain}
    return tiny_home(
        root,
        finetune_cron=NEVER_CRON,
        schedule={"policy": "drift", "staleness_bound_h": 1000.0},
        drift=drift,
        train={**TINY_SETTINGS["train"], "recipe": recipe},
    )


def land_and_wait(settings: Settings, source: Path, names: list[str], daemon) -> None:
    """Land ``names`` from ``source`` and wait until the daemon (``orchestration.cli.daemon.Daemon``) is idle;
    fails the test on any failed run."""
    from orchestration.sources.landing import replay

    replay(source, settings.paths.landing, names=names)
    summary = daemon.wait_until_idle(timeout_s=900)
    assert summary.failures == [], summary.failures


def is_run_worker(proc) -> bool:
    """Whether a ``psutil.Process`` is a Dagster run worker: a child of the code server's fork server
    (``orchestration.run_workers``) or, with ``run_workers = "spawn"``, a ``multiprocessing`` spawn child."""
    if any("spawn_main" in part for part in proc.cmdline()):
        return True
    parent = proc.parent()  # the fork server: a forkserver process whose own parent (the code server) is not one;
    grandparent = parent.parent() if parent is not None else None  # a worker's children share its command line
    return _is_fork_server(parent) and not _is_fork_server(grandparent)


def _is_fork_server(proc) -> bool:
    return proc is not None and any("multiprocessing.forkserver" in part for part in proc.cmdline())
