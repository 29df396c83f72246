"""Helpers for orchestration tests: tiny homes with real DuckDB, MLflow and Dagster stores."""

import json
from pathlib import Path

from orchestration.config.settings import Settings, load_settings, write_settings

TINY_SETTINGS = {
    "landing_interval_s": 1,
    "finetune_trigger_interval_s": 1,
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
