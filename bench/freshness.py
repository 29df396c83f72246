"""Freshness of the loop: how long after a window lands the champion reflects it, through the real daemon.

    python bench/freshness.py [--source data/demo] [--windows 12] [--interval 60] [--home DIR] [--tiny]
                              [--timeout 7200] [--out bench/results/freshness]

A steady-state stream: the window files of ``--source`` (default: the demo's 12 PyPI windows) land in a fresh
home's ``landing/`` one every ``--interval`` seconds (``orchestration.sources.landing.land_file``: atomic,
fresh mtime) while ``dagster-daemon`` runs over the home with the demo's settings (``streamtune demo``:
``orchestration.cli.commands_loop.DEMO_SETTINGS``; ``--tiny``: a 1-layer model, for the smoke test). Choose
``--interval`` above the processing time of one window, or the fine-tunes queue behind each other and the
figures measure the backlog, not the loop. Once every run has ended, every figure is read from Dagster's own
event log (``DagsterInstance.all_logs``):

- per window: landed (the file's mtime) -> ingest run created (landing sensor) -> approved
  (``approved_window`` materialized) -> fine-tune run created (trigger sensor) -> champion moved
  (``champion_model`` materialized with ``promoted``) or rejected (``model_update`` with ``promoted`` false);
  the update's pure training time (``challenger_model``'s ``wall_s``: ``training.loop`` fit wall clock);
  freshness ratio = (landed -> champion moved) / training time;
- per run: queued (created -> RUN_STARTING: the run queue), launch (RUN_STARTING -> the code server's "Started
  process for run" event), import (that event -> RUN_START: the run worker imports Dagster and
  ``orchestration.definitions`` and loads the job), steps (RUN_START -> the run's end, with each step's own
  time), launch -> end (the ingest target: <= 4 s);
- per fine-tune: overhead = (RUN_STARTING -> end) - ``challenger_model`` step (training, scoring and
  registration) and - ``wall_s`` (training alone): the fine-tune target is <= 5 s of the first.

Writes ``<out>.json`` (every figure) and ``<out>.md`` (the tables, the command, ``uptime`` before and after).
The machine is shared: the load average is in the results; compare runs made under the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY_SETTINGS = {
    "max_windows_per_update": 1,
    "landing_interval_s": 1,
    "finetune_trigger_interval_s": 1,
    "eval_fraction": 0.2,
    "retention_rows": 64,
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "vocab_size": 300},
    "train": {"epochs": 1.0, "batch_size": 8, "seq_len": 32, "peak_lr": 3e-3},
    "gate": {"min_improvement": 0.0, "retention_tolerance": 0.5},
    "drift": {"enabled": False},
}
"""``--tiny``: the smoke test's settings (a 1-layer model, no drift profiles)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, default=ROOT / "data" / "demo", help="directory of window files")
    p.add_argument("--windows", type=int, default=0, help="land only the first N windows (0 = all)")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between two landings")
    p.add_argument("--home", type=Path, default=None, help="streamtune home (emptied first; default: a temp dir)")
    p.add_argument("--tiny", action="store_true", help="a 1-layer model instead of the demo's (smoke test)")
    p.add_argument("--timeout", type=float, default=7200.0, help="give up after this many seconds")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "freshness", help="<out>.json/.md")
    return p.parse_args(argv)


def uptime() -> str:
    """``uptime``'s line (load averages of the shared machine)."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def prepare_home(home: Path, tiny: bool):
    """An empty home with the demo's settings (or ``TINY_SETTINGS``); returns its ``Settings``."""
    from orchestration.cli.commands_loop import DEMO_SETTINGS
    from orchestration.config.settings import load_settings, write_settings

    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    write_settings(home, TINY_SETTINGS if tiny else DEMO_SETTINGS)
    settings = load_settings(home)
    settings.paths.ensure()
    return settings


def land_stream(daemon, files: list[Path], landing: Path, interval: float) -> dict[str, float]:
    """Land ``files`` in order, one every ``interval`` seconds (checking the daemon is alive meanwhile).

    Returns:
        ``{window key: landed at}`` (epoch seconds: the landed file's mtime, which the sensor orders by).
    """
    from orchestration.sources.landing import land_file, window_key_for

    landed, start = {}, time.time()
    for i, f in enumerate(files):
        while time.time() < start + i * interval:
            daemon.check_alive()
            time.sleep(min(1.0, max(0.0, start + i * interval - time.time())))
        dst = land_file(f, landing)
        landed[window_key_for(dst.name)] = dst.stat().st_mtime
    return landed


def run_events(instance, run_id: str) -> dict:
    """One run's timeline from its event log (epoch seconds; None when the event is absent).

    Returns:
        ``{"created", "starting", "process", "start", "end", "steps": {step: [start, end]},
        "materialized": {asset: [(timestamp, partition, {metadata key: value})]}}``.
    """
    record = instance.get_run_record_by_id(run_id)
    out = {"created": record.create_timestamp.timestamp(), "starting": None, "process": None, "start": None}
    out.update(end=None, steps={}, materialized={})
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        kind, ts = event.event_type_value, entry.timestamp
        if kind == "PIPELINE_STARTING":
            out["starting"] = ts
        elif kind == "ENGINE_EVENT" and (event.message or "").startswith("Started process for run"):
            out["process"] = out["process"] or ts
        elif kind == "PIPELINE_START":
            out["start"] = ts
        elif kind in ("PIPELINE_SUCCESS", "PIPELINE_FAILURE", "PIPELINE_CANCELED"):
            out["end"] = ts
        elif kind == "STEP_START":
            out["steps"][event.step_key] = [ts, None]
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED") and event.step_key in out["steps"]:
            out["steps"][event.step_key][1] = ts
        elif kind == "ASSET_MATERIALIZATION":
            mat = event.event_specific_data.materialization
            meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
            out["materialized"].setdefault(mat.asset_key.to_user_string(), []).append((ts, mat.partition, meta))
    return out


def _span(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 3)


def run_phases(run, ev: dict) -> dict:
    """Seconds per phase of one run (``run_events``); None where an event is missing (e.g. a run that failed
    to launch)."""
    steps = {k: _span(a, b) for k, (a, b) in ev["steps"].items()}
    return {
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": run.tags.get("dagster/partition", ""),
        "status": run.status.value,
        "queued_s": _span(ev["created"], ev["starting"]),
        "launch_s": _span(ev["starting"], ev["process"]),
        "import_s": _span(ev["process"], ev["start"]),
        "steps_s": _span(ev["start"], ev["end"]),
        "launch_to_end_s": _span(ev["starting"], ev["end"]),
        "step_s": steps,
        "step_gaps_s": round(
            (_span(ev["start"], ev["end"]) or 0.0) - sum(v for v in steps.values() if v is not None), 3
        ),
    }


def _first(materialized: dict, asset: str, partition: str | None = None):
    """The first ``(timestamp, partition, metadata)`` of ``asset`` (on ``partition``), or None."""
    for item in materialized.get(asset, []):
        if partition is None or item[1] == partition:
            return item
    return None


def window_row(key: str, landed: float, ingest: tuple | None, finetune: tuple | None) -> dict:
    """Freshness figures of window ``key``: ``ingest``/``finetune`` are ``(phases, events)`` of the
    successful ingest run and of the fine-tune that trained the window (None if there was none)."""
    row = {"window": key, "landed_at": landed}
    if ingest is not None:
        phases, ev = ingest
        approved = _first(ev["materialized"], "approved_window", key)
        row.update(
            landed_to_ingest_created_s=_span(landed, ev["created"]),
            ingest=phases,
            approved_at=approved[0] if approved else None,
            landed_to_approved_s=_span(landed, approved[0] if approved else None),
        )
    if finetune is not None and row.get("approved_at"):
        phases, ev = finetune
        challenger = _first(ev["materialized"], "challenger_model")
        update = _first(ev["materialized"], "model_update")
        champion = _first(ev["materialized"], "champion_model")
        moved = bool(champion and champion[2].get("promoted"))
        decided = champion[0] if moved else (update[0] if update else ev["end"])
        training = float(challenger[2]["wall_s"]) if challenger else None
        step = phases["step_s"].get("challenger_model")
        wall = phases["launch_to_end_s"]
        row.update(
            finetune=phases,
            version=str(challenger[2].get("version")) if challenger else None,
            promoted=moved,
            approved_to_finetune_created_s=_span(row["approved_at"], ev["created"]),
            approved_to_decided_s=_span(row["approved_at"], decided),
            landed_to_decided_s=_span(landed, decided),
            training_s=training,
            finetune_overhead_s=round(wall - step, 3) if wall is not None and step is not None else None,
            finetune_wall_minus_training_s=round(wall - training, 3) if wall is not None and training else None,
            freshness_ratio=round((decided - landed) / training, 3) if training else None,
        )
    return row


def collect(settings, landed: dict[str, float]) -> tuple[list[dict], list[dict]]:
    """Per-window rows (``window_row``) and every run's phases (``run_phases``), from the home's instance."""
    from orchestration.cli.daemon import open_instance

    with open_instance(settings) as instance:
        runs = sorted(instance.get_runs(), key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp)
        timeline = {r.run_id: (run_phases(r, ev), ev) for r in runs for ev in [run_events(instance, r.run_id)]}
    ingest_of, finetune_of = {}, {}
    for run in runs:
        phases, ev = timeline[run.run_id]
        if run.job_name == "ingest_window" and run.status.value == "SUCCESS":
            ingest_of[phases["partition"]] = timeline[run.run_id]
        challenger = _first(ev["materialized"], "challenger_model")
        if run.job_name == "finetune" and challenger:
            for key in challenger[2].get("windows") or []:
                finetune_of.setdefault(key, timeline[run.run_id])
    rows = [window_row(k, t, ingest_of.get(k), finetune_of.get(k)) for k, t in landed.items()]
    return rows, [timeline[r.run_id][0] for r in runs]


def _stats(values: list[float | None]) -> dict:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return {"n": 0}
    return {"n": len(vals), "mean": round(statistics.fmean(vals), 2), "median": round(statistics.median(vals), 2)}


def summarize(rows: list[dict], runs: list[dict]) -> dict:
    """Means and medians per figure: of the windows, and per job of the runs' phases and steps."""
    keys = ["landed_to_approved_s", "approved_to_decided_s", "landed_to_decided_s", "training_s"]
    keys += ["finetune_overhead_s", "finetune_wall_minus_training_s", "freshness_ratio"]
    out = {"windows": {k: _stats([r.get(k) for r in rows]) for k in keys}, "jobs": {}}
    for job in sorted({r["job"] for r in runs}):
        mine = [r for r in runs if r["job"] == job and r["status"] == "SUCCESS"]
        phases = ["queued_s", "launch_s", "import_s", "steps_s", "step_gaps_s", "launch_to_end_s"]
        steps = sorted({s for r in mine for s in r["step_s"]})
        out["jobs"][job] = {
            "runs": len(mine),
            **{p: _stats([r[p] for r in mine]) for p in phases},
            "steps": {s: _stats([r["step_s"].get(s) for r in mine]) for s in steps},
        }
    return out


def _f(v, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def markdown(result: dict) -> str:
    """The results as Markdown: command and load, per-window table, per-job phase table, step table."""
    lines = [
        "# Freshness through the real daemon (`bench/freshness.py`)",
        "",
        f"`{result['command']}` at {result['date']} on {result['commit']} ({result['settings']} settings, "
        f"{len(result['windows'])} windows, one every {result['interval_s']:.0f} s; loop {result['loop_s']:.0f} s).",
        "",
        f"Load before: `{result['uptime_before']}`  ",
        f"Load after: `{result['uptime_after']}`",
        "",
        "| window | landed→approved s | approved→decided s | landed→decided s | training s | fine-tune overhead s "
        "(wall − train step) | wall − training s | ratio | decision |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["windows"]:
        decision = "promoted" if r.get("promoted") else ("rejected" if "promoted" in r else "not trained")
        lines.append(
            f"| {r['window']} | {_f(r.get('landed_to_approved_s'))} | {_f(r.get('approved_to_decided_s'))} | "
            f"{_f(r.get('landed_to_decided_s'))} | {_f(r.get('training_s'))} | {_f(r.get('finetune_overhead_s'))} | "
            f"{_f(r.get('finetune_wall_minus_training_s'))} | {_f(r.get('freshness_ratio'), 2)} | {decision} |"
        )
    w = result["summary"]["windows"]
    lines += ["", "Means over windows: " + ", ".join(f"{k} {v.get('mean', '–')}" for k, v in w.items()), ""]
    lines += [
        "| job | runs | queued s | launch s | import s | steps s | between steps s | launch→end s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for job, j in result["summary"]["jobs"].items():
        cells = [_f(j[p].get("median"), 2) for p in ("queued_s", "launch_s", "import_s", "steps_s")]
        cells += [_f(j["step_gaps_s"].get("median"), 2), _f(j["launch_to_end_s"].get("median"), 2)]
        lines.append(f"| {job} | {j['runs']} | " + " | ".join(cells) + " |")
    lines += ["", "Medians of successful runs. Steps (median s):", ""]
    lines += ["| job | step | runs | median s | mean s |", "|---|---|---|---|---|"]
    for job, j in result["summary"]["jobs"].items():
        for step, s in j["steps"].items():
            lines.append(f"| {job} | {step} | {s['n']} | {_f(s.get('median'), 2)} | {_f(s.get('mean'), 2)} |")
    return "\n".join(lines) + "\n"


def _commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=ROOT).stdout
    return (proc.stdout.strip() or "unknown") + (" + uncommitted changes" if dirty.strip() else "")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from orchestration.cli.daemon import Daemon
    from orchestration.cli.homelock import stop_on_signals
    from orchestration.sources.landing import window_files_in_order

    stop_on_signals()  # SIGTERM unwinds like Ctrl-C: the daemon and every run worker of the home are stopped

    files = window_files_in_order(args.source)[: args.windows or None]
    if not files:
        raise SystemExit(f"no window files in {args.source}")
    tmp = None if args.home else tempfile.TemporaryDirectory(prefix="freshness-")
    home = args.home or Path(tmp.name) / "home"
    settings = prepare_home(home, args.tiny)
    before, started = uptime(), time.time()
    with Daemon(settings, command="bench") as daemon:
        landed = land_stream(daemon, files, settings.paths.landing, args.interval)
        summary = daemon.wait_until_idle(timeout_s=args.timeout)
    loop_s = time.time() - started
    rows, runs = collect(settings, landed)
    result = {
        "command": "python bench/freshness.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "settings": "tiny" if args.tiny else "demo",
        "interval_s": args.interval,
        "loop_s": round(loop_s, 1),
        "runs_by_status": summary.runs,
        "failures": summary.failures,
        "uptime_before": before,
        "uptime_after": uptime(),
        "windows": rows,
        "runs": runs,
        "summary": summarize(rows, runs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    if tmp is not None:
        tmp.cleanup()
    return result


if __name__ == "__main__":
    main()
