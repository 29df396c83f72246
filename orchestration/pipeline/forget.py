"""Deletion requests (right to be forgotten): ``streamtune forget --where "<field> = <value>"`` / ``--id ID``.

No Dagster imports at module level (the retrain request goes through ``dagster job launch``, the same
queue the daemon serves). What one request does, in order:

1. **Find** the matching records: rows of ``raw.events`` (with ``raw.staged_text`` of uncurated windows),
   ``curated.events`` and ``curated.quarantine``
   (identity ``window_key, row_number``) whose ``record_id`` / text / metadata field equals the value,
   and unparseable lines in ``raw.rejects`` whose JSON has that field.
2. **Find the affected model versions** from ``train.ledger``: versions *trained* on them (roles
   ``train``, ``replay``), versions only *evaluated* on them (``new_eval``, ``retention_eval``), and every
   later version fine-tuned from a trained one (``train.updates.parent_version``: its weights descend
   from the deleted data). The base version is flagged when its tokenizer was built from them.
3. **Delete**, in one DuckDB transaction: the rows in ``raw.events``, ``raw.staged_text``, ``raw.rejects``, ``curated.events``,
   ``curated.quarantine`` and ``train.replay_buffer``; window row counts are refreshed; the trained and
   derived versions go to ``train.retired_versions`` (their windows count as pending again, so the next
   fine-tune retrains them without the deleted rows). ``train.ledger`` keeps its rows (record ids, no
   text) as the audit trail. The request is recorded in ``monitor.forget_requests`` (the criteria as
   field + SHA-256 of the value, never the value).
4. **Scrub files**: the landing files (rewritten without the records, mtime kept so the landing sensor
   does not see a new file), the Parquet training snapshots, the GX Data Docs of the affected windows
   and the local copies of retired model versions.
5. **Mark the registry**: tags on every affected version (``streamtune.forget_requests``,
   ``streamtune.contains_deleted`` / ``streamtune.derived_from_deleted`` / ``streamtune.evaluated_on_deleted``);
   when the champion is retired the ``champion`` alias moves back to the newest clean ancestor
   (``train.rollbacks`` row with the reason).
6. **Request the retrain**: ``finetune`` runs submitted to the home's Dagster instance (queued; the
   daemon launches them) with tags ``streamtune/trigger=forget`` and ``streamtune/forget_request=<id>``,
   enough of them to cover every window to retrain under ``max_windows_per_update``.

The report (``<home>/forget/<request id>.json``) lists what was deleted per table and window, the
affected versions with their roles, the champion move and the submitted runs.

``--where`` is parsed, not interpolated: the field must be a known column (``record_id`` or the
configured id field, ``window_key``, the text field) or a metadata key present in the warehouse; the
value is always a bound parameter.
"""

from __future__ import annotations

import contextlib
import getpass
import gzip
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from orchestration.config.settings import Settings
from orchestration.store.warehouse import Warehouse
from orchestration.tags import REQUEST_TAG, TRIGGER_TAG

FORGET_SQL = """
CREATE TABLE IF NOT EXISTS monitor.forget_requests (
    request_id VARCHAR PRIMARY KEY,
    requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor VARCHAR,
    reason VARCHAR,
    criteria VARCHAR NOT NULL,         -- JSON: [{field, column, value_sha256}] and the number of ids
    deleted VARCHAR NOT NULL,          -- JSON: {table: rows}
    record_ids VARCHAR[] NOT NULL,
    windows VARCHAR[] NOT NULL,
    trained_versions VARCHAR[] NOT NULL,
    derived_versions VARCHAR[] NOT NULL,
    evaluated_versions VARCHAR[] NOT NULL,
    champion_before VARCHAR,
    champion_after VARCHAR,
    retrain_windows VARCHAR[] NOT NULL,
    retrain_run_ids VARCHAR[] NOT NULL,
    status VARCHAR NOT NULL,           -- deleted | retrain_requested | retrain_not_needed | retrain_failed
    report_path VARCHAR
);
"""

TRAINED_ROLES = ("train", "replay")
EVAL_ROLES = ("new_eval", "retention_eval")

_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")
_WHERE = re.compile(
    r"""^\s*(?P<field>[A-Za-z_][A-Za-z0-9_\-]{0,63})\s*(?:=|==)\s*"""
    r"""(?:'(?P<sq>(?:[^'\\]|\\.)*)'|"(?P<dq>(?:[^"\\]|\\.)*)"|(?P<bare>[^\s'"=]+))\s*$""",
    re.DOTALL,
)


class ForgetError(ValueError):
    """A deletion request that cannot be carried out as given (bad --where, unknown field, no home)."""


@dataclass(frozen=True)
class Criterion:
    """One equality: ``column`` is ``record_id``, ``window_key``, ``text`` or ``metadata``; ``key`` is the
    field name (the JSON key for metadata and rejects)."""

    field: str
    column: str
    key: str
    value: str

    def describe(self) -> dict:
        return {
            "field": self.field,
            "column": self.column,
            "value_sha256": hashlib.sha256(self.value.encode()).hexdigest(),
        }


def parse_where(expr: str) -> tuple[str, str]:
    """``'<field> = <value>'`` -> ``(field, value)``. The value may be bare (no spaces or quotes) or in
    single/double quotes (backslash escapes the quote). Anything else is rejected.

    Raises:
        ForgetError: not of that form (e.g. ``OR``, ``;``, a second condition).
    """
    m = _WHERE.match(expr or "")
    if not m:
        raise ForgetError(
            f"cannot read --where {expr!r}: expected <field> = <value>, e.g. \"package = 'pkg3'\" "
            "(one equality; quote values with spaces)"
        )
    raw = next(v for v in (m.group("sq"), m.group("dq"), m.group("bare")) if v is not None)
    value = re.sub(r"\\(.)", r"\1", raw, flags=re.DOTALL)
    return m.group("field"), value


def resolve_criteria(wh: Warehouse, settings: Settings, wheres: list[str], ids: list[str]) -> list[Criterion]:
    """Turn ``--where`` expressions and ``--id`` values into criteria against known fields.

    Raises:
        ForgetError: a field that is neither a column nor a metadata key seen in the warehouse.
    """
    out = [Criterion(settings.id_field, "record_id", settings.id_field, str(i)) for i in ids]
    if not wheres:
        return out
    keys = metadata_keys(wh)
    for expr in wheres:
        name, value = parse_where(expr)
        if name in ("record_id", settings.id_field):
            out.append(Criterion(name, "record_id", settings.id_field, value))
        elif name in ("window_key", "window"):
            out.append(Criterion(name, "window_key", "window_key", value))
        elif name in (settings.text_field, "text"):
            out.append(Criterion(name, "text", settings.text_field, value))
        elif name in keys:
            out.append(Criterion(name, "metadata", name, value))
        else:
            known = sorted({"record_id", settings.id_field, "window_key", settings.text_field} | keys)
            raise ForgetError(f"unknown field {name!r} in --where: known fields are {known}")
    return out


def metadata_keys(wh: Warehouse) -> set[str]:
    """Every top-level key of a ``metadata`` JSON object in raw, curated and quarantine rows."""
    sql = " UNION ".join(
        f"SELECT DISTINCT unnest(json_keys(metadata)) AS k FROM {t} WHERE metadata IS NOT NULL "
        "AND json_valid(metadata) AND json_type(metadata) = 'OBJECT'"
        for t in ("raw.staged_text", "curated.events", "curated.quarantine")
    )
    with wh.connect(read_only=True) as con:
        return {k for (k,) in con.execute(sql).fetchall() if k and _FIELD.fullmatch(k)}


def _json_path(key: str) -> str:
    assert _FIELD.fullmatch(key), key  # validated names only; still passed as a bound parameter
    return f'$."{key}"'


def _row_predicate(c: Criterion, alias: str = "") -> tuple[str, list[Any]]:
    """SQL condition (with ``?`` placeholders) and its parameters for a row table."""
    p = f"{alias}." if alias else ""
    if c.column == "metadata":
        return (f"(json_valid({p}metadata) AND json_extract_string({p}metadata, ?) = ?)", [_json_path(c.key), c.value])
    return f"{p}{c.column} = ?", [c.value]


def _reject_predicate(c: Criterion) -> tuple[str, list[Any]] | None:
    if c.column == "window_key":
        return "window_key = ?", [c.value]
    return "(json_valid(raw) AND json_type(raw) = 'OBJECT' AND json_extract_string(raw, ?) = ?)", [
        _json_path(c.key),
        c.value,
    ]


def _any(preds: list[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    sql = " OR ".join(p for p, _ in preds) or "FALSE"
    params = [x for _, ps in preds for x in ps]
    return f"({sql})", params


@dataclass
class ForgetReport:
    """What a deletion request found and did (JSON-serializable)."""

    request_id: str
    requested_at: str
    criteria: list[dict]
    dry_run: bool
    deleted: dict[str, int] = field(default_factory=dict)
    deleted_by_window: dict[str, dict[str, int]] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)  # window_key, row_number, record_id
    trained_versions: list[str] = field(default_factory=list)
    derived_versions: list[str] = field(default_factory=list)
    evaluated_versions: list[str] = field(default_factory=list)
    base_tokenizer_affected: str | None = None
    version_roles: dict[str, list[str]] = field(default_factory=dict)
    champion_before: str | None = None
    champion_after: str | None = None
    retrain_windows: list[str] = field(default_factory=list)
    retrain_run_ids: list[str] = field(default_factory=list)
    retrain_error: str = ""
    files: dict[str, list[str]] = field(default_factory=dict)
    status: str = ""
    report_path: str = ""

    @property
    def record_ids(self) -> list[str]:
        return sorted({r["record_id"] for r in self.records})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["record_ids"] = self.record_ids
        return d


_RAW_ROWS = (
    "(SELECT e.window_key, e.row_number, e.record_id, s.text, s.metadata FROM raw.events e "
    "LEFT JOIN raw.staged_text s USING (window_key, row_number)) AS raw_rows"
)
"""Parsed rows with their staged text/metadata (NULL once the window is curated: the text is then in
``curated.events`` / ``curated.quarantine``)."""


def _matched_rows(con: duckdb.DuckDBPyConnection, criteria: list[Criterion]) -> pl.DataFrame:
    """(window_key, row_number, record_id) of every matching row; the replay buffer only holds copies of
    curated rows (same identity), so it is covered by these keys."""
    where, params = _any([_row_predicate(c) for c in criteria])
    tables = (_RAW_ROWS, "curated.events", "curated.quarantine")
    sql = " UNION ".join(f"SELECT window_key, row_number, record_id FROM {t} WHERE {where}" for t in tables)
    return con.sql(f"SELECT DISTINCT * FROM ({sql}) ORDER BY window_key, row_number", params=params * len(tables)).pl()


def _lineage(updates: list[tuple[str, str | None]]) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {}
    for version, parent in updates:
        if parent is not None:
            children.setdefault(str(parent), []).append(str(version))
    return children


def forget(
    settings: Settings,
    *,
    wheres: list[str] = (),
    ids: list[str] = (),
    reason: str = "deletion request",
    dry_run: bool = False,
    request_retrain: bool = True,
    actor: str | None = None,
) -> ForgetReport:
    """Carry out one deletion request on a home (see the module docstring for every step).

    Args:
        wheres: ``"<field> = <value>"`` expressions (OR-ed).
        ids: record ids (OR-ed with ``wheres``).
        dry_run: only find and report; change nothing.
        request_retrain: submit the ``finetune`` runs to the home's Dagster instance.

    Raises:
        ForgetError: no criteria, a malformed ``--where`` or an unknown field; no warehouse in the home.
    """
    if not wheres and not ids:
        raise ForgetError('nothing to forget: pass --where "<field> = <value>" or --id ID')
    if not settings.paths.warehouse.exists():
        raise ForgetError(f"no warehouse at {settings.paths.warehouse}")
    wh = Warehouse(settings.paths.warehouse, lock_timeout_s=300)
    wh.init_schema()
    criteria = resolve_criteria(wh, settings, list(wheres), list(ids))
    now = datetime.now(UTC)
    report = ForgetReport(
        request_id=f"forget-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}",
        requested_at=now.isoformat(timespec="seconds"),
        criteria=[c.describe() for c in criteria],
        dry_run=dry_run,
    )
    actor = actor or getpass.getuser()

    # 1-2. find rows, versions (read-only)
    with wh.connect() as con:
        con.execute(FORGET_SQL)
        rows = _matched_rows(con, criteria)
        con.register("fg_rows", rows.to_arrow())
        rej_preds = [p for p in (_reject_predicate(c) for c in criteria) if p]
        rej_where, rej_params = _any(rej_preds)
        rejects = con.sql(f"SELECT window_key, row_number FROM raw.rejects WHERE {rej_where}", params=rej_params).pl()
        ledger = con.execute(
            "SELECT l.model_version, l.role, count(*) FROM train.ledger l JOIN fg_rows r USING (window_key, row_number) "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        updates = con.execute(
            "SELECT model_version, parent_version, window_keys FROM train.updates ORDER BY created_at"
        ).fetchall()
        retired = {v for (v,) in con.execute("SELECT model_version FROM train.retired_versions").fetchall()}
        first_train = con.execute(
            "SELECT count(*) FROM train.ledger l JOIN fg_rows r USING (window_key, row_number) WHERE l.role = 'train' "
            "AND l.model_version = (SELECT model_version FROM train.updates ORDER BY created_at LIMIT 1)"
        ).fetchall()[0][0]
        con.unregister("fg_rows")
    report.records = rows.to_dicts()
    roles: dict[str, set[str]] = {}
    for version, role, _n in ledger:
        roles.setdefault(str(version), set()).add(role)
    trained = sorted((v for v, r in roles.items() if r & set(TRAINED_ROLES)), key=_vkey)
    children = _lineage([(v, p) for v, p, _ in updates])
    derived: set[str] = set()
    stack = list(trained)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in trained and child not in derived:
                derived.add(child)
                stack.append(child)
    report.trained_versions = trained
    report.derived_versions = sorted(derived, key=_vkey)
    report.evaluated_versions = sorted((v for v, r in roles.items() if not r & set(TRAINED_ROLES)), key=_vkey)
    report.version_roles = {v: sorted(r) for v, r in sorted(roles.items(), key=lambda x: _vkey(x[0]))}
    retire = set(trained) | derived
    windows_of = {str(v): list(w) for v, _, w in updates}
    retrain = {w for v in retire for w in windows_of.get(v, [])}
    registry = _registry(settings)
    report.champion_before = registry.version_for_alias("champion") if registry else None
    base = registry.version_for_alias("base") if registry else None
    if base and first_train:
        report.base_tokenizer_affected = base
    report.deleted_by_window = _counts_by_window(rows, rejects)
    window_keys = sorted(set(rows["window_key"].to_list()) | set(rejects["window_key"].to_list()))
    if dry_run:
        report.deleted = _table_counts_preview(wh, rows, rejects)
        report.retrain_windows = _landing_order(wh, retrain)
        report.status = "dry_run"
        return report

    # 3. delete (one transaction)
    with wh.connect() as con:
        con.execute(FORGET_SQL)
        con.execute("BEGIN")
        con.register("fg_rows", rows.to_arrow())
        con.register("fg_rejects", rejects.to_arrow())
        deleted: dict[str, int] = {}
        for table in ("raw.events", "raw.staged_text", "curated.events", "curated.quarantine", "train.replay_buffer"):
            n = con.execute(
                f"DELETE FROM {table} t USING fg_rows r WHERE t.window_key = r.window_key "
                "AND t.row_number = r.row_number"
            ).fetchall()[0][0]
            deleted[table] = int(n)
        deleted["raw.rejects"] = int(
            con.execute(
                "DELETE FROM raw.rejects t USING fg_rejects r WHERE t.window_key = r.window_key "
                "AND t.row_number = r.row_number"
            ).fetchall()[0][0]
        )
        con.execute(
            "UPDATE raw.windows w SET parsed_rows = (SELECT count(*) FROM raw.events e WHERE e.window_key = w.window_key), "
            "rejected_rows = (SELECT count(*) FROM raw.rejects j WHERE j.window_key = w.window_key) "
            "WHERE list_contains(?, w.window_key)",
            [window_keys],
        )
        con.execute(
            "UPDATE raw.windows SET source_rows = parsed_rows + rejected_rows WHERE list_contains(?, window_key)",
            [window_keys],
        )
        con.execute(
            "UPDATE curated.windows w SET curated_rows = (SELECT count(*) FROM curated.events e WHERE e.window_key = w.window_key), "
            "quarantined_rows = (SELECT count(*) FROM curated.quarantine q WHERE q.window_key = w.window_key) "
            "WHERE list_contains(?, w.window_key)",
            [window_keys],
        )
        # a window left without curated rows is no longer approved (nothing in it to train on)
        con.execute(
            "DELETE FROM curated.windows WHERE list_contains(?, window_key) AND curated_rows = 0", [window_keys]
        )
        for v in sorted(retire - retired, key=_vkey):
            con.execute(
                "INSERT INTO train.retired_versions (model_version, request_id, reason) VALUES (?, ?, ?)",
                [
                    v,
                    report.request_id,
                    f"forget request {report.request_id}: "
                    + ("trained on deleted records" if v in trained else "fine-tuned from a version that was"),
                ],
            )
        con.execute(
            "INSERT INTO monitor.forget_requests (request_id, actor, reason, criteria, deleted, record_ids, windows, "
            "trained_versions, derived_versions, evaluated_versions, champion_before, retrain_windows, retrain_run_ids, "
            "status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, [], 'deleted')",
            [
                report.request_id,
                actor,
                reason,
                json.dumps({"criteria": report.criteria, "ids": len(ids)}),
                json.dumps(deleted),
                report.record_ids,
                window_keys,
                report.trained_versions,
                report.derived_versions,
                report.evaluated_versions,
                report.champion_before,
                sorted(retrain),
            ],
        )
        con.execute("COMMIT")
    report.deleted = deleted
    report.retrain_windows = _landing_order(wh, retrain)

    # 4. files
    report.files = {
        "landing": _scrub_landing(settings, wh, rows, criteria, window_keys),
        "snapshots": _scrub_snapshots(settings.paths.snapshots, rows),
        "data_docs": _remove_dirs([settings.paths.data_docs / w for w in window_keys]),
        "local_models": _remove_dirs([settings.paths.models / "registry" / f"v{v}" for v in retire]),
    }

    # 5. registry
    if registry is not None:
        for v in sorted(roles, key=_vkey) + sorted(derived, key=_vkey):
            tags = {
                "streamtune.forget_requests": _append(
                    registry.version_tags(v).get("streamtune.forget_requests"), report.request_id
                )
            }
            if v in trained:
                tags["streamtune.contains_deleted"] = "true"
            elif v in derived:
                tags["streamtune.derived_from_deleted"] = "true"
            else:
                tags["streamtune.evaluated_on_deleted"] = "true"
            if v in retire:
                tags["streamtune.retired"] = "true"
            registry.tag_version(v, tags)
        if report.base_tokenizer_affected:
            registry.tag_version(
                report.base_tokenizer_affected,
                {
                    "streamtune.tokenizer_saw_deleted": "true",
                    "streamtune.forget_requests": _append(
                        registry.version_tags(report.base_tokenizer_affected).get("streamtune.forget_requests"),
                        report.request_id,
                    ),
                },
            )
        champion = report.champion_before
        if champion in retire:
            parents = {str(v): (None if p is None else str(p)) for v, p, _ in updates}
            target = champion
            while target in retire or target in retired:
                target = parents.get(target)
                if target is None:
                    break
            target = target or base
            if target and target != champion:
                why = f"forget request {report.request_id}: v{champion} was trained on deleted records"
                registry.rollback_champion(target, why, actor=actor)
                wh.record_rollback(champion, target, why, actor)
        report.champion_after = registry.version_for_alias("champion")

    # 6. retrain request
    report.status = "retrain_not_needed"
    if retrain and request_retrain:
        per_run = settings.max_windows_per_update or len(retrain)
        n_runs = max(1, math.ceil(len(retrain) / per_run))
        try:
            report.retrain_run_ids = submit_finetune_runs(
                settings, n_runs, {TRIGGER_TAG: "forget", REQUEST_TAG: report.request_id}
            )
            report.status = "retrain_requested"
        except (RuntimeError, OSError) as exc:
            report.retrain_error = str(exc)
            report.status = "retrain_failed"
    elif retrain:
        report.status = "deleted"

    # report
    out = settings.home / "forget" / f"{report.request_id}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report.report_path = str(out)
    out.write_text(json.dumps(report.to_dict(), indent=2, default=str))
    with wh.connect() as con:
        con.execute(
            "UPDATE monitor.forget_requests SET champion_after = ?, retrain_run_ids = ?, status = ?, "
            "report_path = ? WHERE request_id = ?",
            [report.champion_after, report.retrain_run_ids, report.status, report.report_path, report.request_id],
        )
    return report


def forget_requests(settings: Settings) -> pl.DataFrame:
    """``monitor.forget_requests``, oldest first (empty frame before the first request)."""
    wh = Warehouse(settings.paths.warehouse)
    with wh.connect() as con:
        con.execute(FORGET_SQL)
        return con.sql("SELECT * FROM monitor.forget_requests ORDER BY requested_at").pl()


def submit_finetune_runs(settings: Settings, n_runs: int, tags: dict[str, str]) -> list[str]:
    """Queue ``n_runs`` runs of the ``finetune`` job on the home's Dagster instance with ``tags``, through
    ``dagster job launch`` (the QueuedRunCoordinator queues them; the daemon launches them, one at a time
    by the ``streamtune/pipeline=finetune`` tag limit). Returns the run ids.

    Raises:
        RuntimeError: the launch command failed (its output in the message).
    """
    from orchestration.cli.daemon import instance_env, open_instance, prepare_instance

    prepare_instance(settings)
    exe = shutil.which("dagster", path=str(Path(sys.executable).parent)) or shutil.which("dagster")
    if exe is None:
        raise RuntimeError("the dagster command is not installed in this environment")
    run_ids = []
    for _ in range(n_runs):
        run_id = str(uuid.uuid4())
        proc = subprocess.run(
            [
                exe,
                "job",
                "launch",
                "-m",
                "orchestration.definitions",
                "-j",
                "finetune",
                "--run-id",
                run_id,
                "--tags",
                json.dumps(tags),
            ],
            env=instance_env(settings),
            cwd=str(settings.home),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"dagster job launch failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}")
        run_ids.append(run_id)
    with open_instance(settings) as instance:
        missing = [r for r in run_ids if instance.get_run_by_id(r) is None]
    if missing:
        raise RuntimeError(f"submitted runs not found in the instance: {missing}")
    return run_ids


# -- helpers -----------------------------------------------------------------------------------------


def _vkey(v: str) -> tuple[int, str]:
    return (int(v), "") if str(v).isdigit() else (1 << 30, str(v))


def _append(existing: str | None, request_id: str) -> str:
    items = [x for x in (existing or "").split(",") if x]
    return ",".join(items + ([request_id] if request_id not in items else []))


def _registry(settings: Settings):
    if not (settings.mlflow_tracking_uri or settings.paths.mlflow_db.exists()):
        return None
    from orchestration.config.profiles import artifact_location
    from training.tracking import ModelRegistry

    return ModelRegistry(settings.tracking_uri, artifact_location(settings), settings.experiment, settings.model_name)


def _counts_by_window(rows: pl.DataFrame, rejects: pl.DataFrame) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (w,), g in rows.group_by(["window_key"]):
        out.setdefault(w, {})["records"] = g.height
    for (w,), g in rejects.group_by(["window_key"]):
        out.setdefault(w, {})["rejects"] = g.height
    return dict(sorted(out.items()))


def _table_counts_preview(wh: Warehouse, rows: pl.DataFrame, rejects: pl.DataFrame) -> dict[str, int]:
    with wh.connect(read_only=True) as con:
        con.register("fg_rows", rows.to_arrow())
        out = {
            t: int(
                con.execute(f"SELECT count(*) FROM {t} JOIN fg_rows USING (window_key, row_number)").fetchall()[0][0]
            )
            for t in ("raw.events", "raw.staged_text", "curated.events", "curated.quarantine", "train.replay_buffer")
        }
    out["raw.rejects"] = rejects.height
    return out


def _landing_order(wh: Warehouse, windows: set[str]) -> list[str]:
    if not windows:
        return []
    with wh.connect(read_only=True) as con:
        order = [
            k for (k,) in con.execute("SELECT window_key FROM raw.windows ORDER BY file_mtime_ns, file_name").fetchall()
        ]
    return [k for k in order if k in windows] + sorted(windows - set(order))


def _record_id(rec: dict, settings: Settings) -> str | None:
    rid = rec.get(settings.id_field)
    if rid is not None and not isinstance(rid, (dict, list)):
        return str(rid)
    text = rec.get(settings.text_field)
    if isinstance(text, str):
        return hashlib.sha256(text.encode()).hexdigest()[:32]
    return None


def _record_matches(rec: dict, ids: set[str], criteria: list[Criterion], settings: Settings) -> bool:
    if _record_id(rec, settings) in ids:
        return True
    for c in criteria:
        if c.column == "window_key":
            continue
        v = rec.get(c.key if c.column != "record_id" else settings.id_field)
        if v is not None and not isinstance(v, (dict, list)) and str(v) == c.value:
            return True
    return False


def _scrub_landing(
    settings: Settings, wh: Warehouse, rows: pl.DataFrame, criteria: list[Criterion], window_keys: list[str]
) -> list[str]:
    """Rewrite each affected window's landing file without the deleted records (atomically, mtime kept).

    JSON Lines: each deleted record's line becomes a blank line, so a re-ingest numbers the other rows as
    before (the blank line is a ``raw.rejects`` row "blank line"). Parquet/CSV: the rows are dropped (a
    re-ingest renumbers the rows after them). Returns ``"<file>: -N records"`` lines; files of a
    whole-window request are removed."""
    if not window_keys:
        return []
    with wh.connect(read_only=True) as con:
        files = dict(
            con.execute(
                "SELECT window_key, file_name FROM raw.windows WHERE list_contains(?, window_key)", [window_keys]
            ).fetchall()
        )
    whole = {c.value for c in criteria if c.column == "window_key"}
    done = []
    for key in window_keys:
        path = settings.paths.landing / files.get(key, "")
        if key not in files or not path.is_file():
            continue
        if key in whole:
            path.unlink()
            done.append(f"{path.name}: removed (whole window)")
            continue
        ids = set(rows.filter(pl.col("window_key") == key)["record_id"].to_list())
        stat = path.stat()
        tmp = settings.home / "forget" / f".{path.name}.tmp"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        name = path.name.lower()
        removed = 0
        if name.endswith((".jsonl", ".ndjson", ".jsonl.gz")):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rb") as src, opener(tmp, "wb") as dst:
                for line in src:
                    rec = None
                    with contextlib.suppress(ValueError, UnicodeDecodeError):
                        rec = json.loads(line)
                    if isinstance(rec, dict) and _record_matches(rec, ids, criteria, settings):
                        removed += 1  # a blank line keeps every other record's row_number on re-ingest
                        dst.write(b"\n")
                        continue
                    dst.write(line)
        elif name.endswith((".parquet", ".csv")):
            df = pl.read_parquet(path) if name.endswith(".parquet") else pl.read_csv(path, infer_schema=False)
            keep = [not _record_matches(r, ids, criteria, settings) for r in df.iter_rows(named=True)]
            removed = len(keep) - sum(keep)
            kept = df.filter(pl.Series(keep, dtype=pl.Boolean))
            kept.write_parquet(tmp) if name.endswith(".parquet") else kept.write_csv(tmp)
        else:
            continue
        if removed:
            os.replace(tmp, path)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the landing sensor must not see a new file
            done.append(f"{path.name}: -{removed} records")
        else:
            tmp.unlink(missing_ok=True)
    return done


def _scrub_snapshots(root: Path, rows: pl.DataFrame) -> list[str]:
    """Rewrite every snapshot Parquet file without the deleted rows."""
    if rows.is_empty() or not root.is_dir():
        return []
    keys = rows.select("window_key", "row_number")
    done = []
    for f in sorted(root.glob("*/*.parquet")):
        df = pl.read_parquet(f)
        if not {"window_key", "row_number"} <= set(df.columns):
            continue
        kept = df.join(keys, on=["window_key", "row_number"], how="anti")
        if kept.height != df.height:
            tmp = f.with_suffix(".parquet.tmp")
            kept.write_parquet(tmp)
            os.replace(tmp, f)
            done.append(f"{f.parent.name}/{f.name}: -{df.height - kept.height} rows")
    return done


def _remove_dirs(dirs: list[Path]) -> list[str]:
    done = []
    for d in dirs:
        if d.is_dir():
            shutil.rmtree(d)
            done.append(d.name)
    return done
