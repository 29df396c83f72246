"""Deletion requests (right to be forgotten): ``streamtune forget --where "<field> = <value>"`` / ``--id ID``.

No Dagster imports (the retrain request is submitted by the caller, ``request_retrain`` with the CLI's
``orchestration.cli.runs.submit_finetune_runs``). What one request does, in order:

1. **Find** the matching records: rows of ``raw.events`` (with ``raw.staged_text`` of uncurated windows),
   ``curated.events`` and ``curated.quarantine``
   (identity ``window_key, row_number``) whose ``record_id`` / text / metadata field equals the value,
   and unparseable lines in ``raw.rejects`` whose JSON has that field.
2. **Find the affected model versions** from ``train.ledger``: versions *trained* on them (roles
   ``train``, ``replay``), versions only *evaluated* on them (``new_eval``, ``retention_eval``), and every
   later version fine-tuned from a trained one (``train.updates.parent_version``: its weights descend
   from the deleted data). The base version is flagged when its tokenizer was built from them.
3. **Delete**, in one DuckDB transaction: the rows in ``raw.events``, ``raw.staged_text``, ``raw.rejects``,
   ``curated.events``, ``curated.quarantine`` and ``train.replay_buffer``; window row counts are refreshed;
   the trained and derived versions go to ``train.retired_versions`` (their windows count as pending again,
   so the next fine-tune retrains them without the deleted rows). ``train.ledger`` keeps its rows (record
   ids, no text) as the audit trail. The request is recorded in ``monitor.forget_requests`` (the criteria
   as field + SHA-256 of the value, never the value). The SQL is ``orchestration.store.erasure``.
4. **Scrub files**: the landing files (rewritten without the records, mtime kept so the landing sensor
   does not see a new file; ``forget_landing``), the Parquet training snapshots (written again without the
   records into a new content-named folder, the old one deleted: ``snapshot.scrub_snapshots``), the GX Data
   Docs of the affected windows, the local copies of retired model versions (``models/registry/v<N>``) and the
   fine-tune work directories of a scrubbed snapshot or a retired parent (``models/updates/``).
5. **Mark the registry, delete the artifacts**: tags on every affected version (``streamtune.forget_requests``,
   ``streamtune.contains_deleted`` / ``streamtune.derived_from_deleted`` / ``streamtune.evaluated_on_deleted``);
   when the champion is retired the ``champion`` alias moves back to the newest clean ancestor
   (``train.rollbacks`` row with the reason). Then the retired versions' artifacts (weights, optimizer
   state, sample generations, snapshot manifest) are deleted through MLflow, and the sample generations
   of versions only evaluated on the records (``forget_artifacts``); the version entries and their tags
   stay as the audit trail (``streamtune.artifacts_deleted`` = request id).
6. **Request the retrain** (``request_retrain``, after ``forget`` returns): ``finetune`` runs submitted to
   the home's Dagster instance (queued; the daemon launches them) with tags ``streamtune/trigger=forget``
   and ``streamtune/forget_request=<id>``, enough of them to cover every window to retrain under
   ``max_windows_per_update``.

The report (``<home>/forget/<request id>.json``) lists what was deleted per table and window, the
affected versions with their roles, the champion move and the submitted runs.

``--where`` is parsed, not interpolated: the field must be a known column (``record_id`` or the
configured id field, ``window_key``, the text field) or a metadata key present in the warehouse; the
value is always a bound parameter.
"""

from __future__ import annotations

import getpass
import json
import math
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from orchestration.config.profiles import open_registry
from orchestration.config.settings import Settings
from orchestration.pipeline.forget_artifacts import delete_version_artifacts, remove_local_models
from orchestration.pipeline.forget_criteria import ForgetError, parse_where, resolve_criteria
from orchestration.pipeline.forget_landing import scrub_landing
from orchestration.pipeline.snapshot import scrub_snapshots
from orchestration.store.erasure import Criterion, ErasureMatch
from orchestration.store.warehouse import Warehouse
from orchestration.tags import REQUEST_TAG, TRIGGER_TAG

__all__ = [
    "Criterion",
    "ForgetError",
    "ForgetReport",
    "forget",
    "forget_requests",
    "parse_where",
    "request_retrain",
    "resolve_criteria",
]

TRAINED_ROLES = ("train", "replay")
EVAL_ROLES = ("new_eval", "retention_eval")


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
        """Distinct record ids of the matched rows, sorted."""
        return sorted({r["record_id"] for r in self.records})

    def to_dict(self) -> dict:
        """The report as a JSON-ready dict (the dataclass fields plus ``record_ids``)."""
        d = asdict(self)
        d["record_ids"] = self.record_ids
        return d


@dataclass
class _Plan:
    """What a request will change, worked out from the warehouse before anything is deleted."""

    match: ErasureMatch
    trained: list[str]  # versions trained on the rows, by version number
    derived: set[str]  # versions fine-tuned (transitively) from a trained one
    retire: set[str]  # trained | derived
    retrain: set[str]  # windows of the retired versions' updates
    window_keys: list[str]  # windows holding a matched row or reject line, sorted


def forget(
    settings: Settings,
    *,
    wheres: list[str] = (),
    ids: list[str] = (),
    reason: str = "deletion request",
    dry_run: bool = False,
    actor: str | None = None,
) -> ForgetReport:
    """Carry out steps 1-5 of one deletion request on a home (see the module docstring) and write its
    report; step 6 is ``request_retrain``.

    Args:
        wheres: ``"<field> = <value>"`` expressions (OR-ed).
        ids: record ids (OR-ed with ``wheres``).
        dry_run: only find and report; change nothing.

    Returns: the report; ``status`` is ``dry_run``, ``deleted`` (windows to retrain) or
        ``retrain_not_needed``.

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

    # 1-2. find rows, versions
    plan = _plan(wh.find_erasure(criteria), report)
    registry = _registry(settings)
    report.champion_before = registry.version_for_alias("champion") if registry else None
    base = registry.version_for_alias("base") if registry else None
    if base and plan.match.first_train:
        report.base_tokenizer_affected = base
    if dry_run:
        report.deleted = wh.erasure_preview(plan.match.rows, plan.match.rejects)
        report.retrain_windows = wh.landing_order(plan.retrain)
        report.status = "dry_run"
        return report

    # 3. delete (one transaction)
    report.deleted = _delete(wh, report, plan, actor=actor, reason=reason, n_ids=len(ids))
    report.retrain_windows = wh.landing_order(plan.retrain)

    # 4. files
    snapshots = scrub_snapshots(settings.paths.snapshots, plan.match.rows)  # re-keyed: write-once holds
    report.files = {
        "landing": scrub_landing(settings, wh, plan.match.rows, criteria, plan.window_keys),
        "snapshots": snapshots,
        "data_docs": _remove_dirs([settings.paths.data_docs / w for w in plan.window_keys]),
        "local_models": remove_local_models(
            settings.paths.models, plan.retire, {s.split("/", 1)[0] for s in snapshots}
        ),
    }

    # 5. registry: tags, champion, then the artifacts of the versions that saw the records
    if registry is not None:
        _tag_versions(registry, report, plan)
        _move_champion(registry, wh, report, plan, base, actor)
        report.champion_after = registry.version_for_alias("champion")
        _delete_artifacts(registry, report, plan)

    report.status = "deleted" if plan.retrain else "retrain_not_needed"
    _save(settings, wh, report)
    return report


def request_retrain(
    settings: Settings, report: ForgetReport, submit: Callable[[Settings, int, dict[str, str]], list[str]]
) -> ForgetReport:
    """Step 6: submit the ``finetune`` runs that retrain ``report.retrain_windows`` (at most
    ``max_windows_per_update`` windows a run) and record the outcome in the report file and
    ``monitor.forget_requests`` (``status`` ``retrain_requested``, or ``retrain_failed`` with
    ``retrain_error``). Does nothing for a dry run or when there is nothing to retrain.

    Args:
        report: what ``forget`` returned.
        submit: ``(settings, n_runs, tags) -> run ids``; raises ``RuntimeError``/``OSError`` on failure
            (``orchestration.cli.runs.submit_finetune_runs``).
    """
    if report.dry_run or not report.retrain_windows:
        return report
    per_run = settings.max_windows_per_update or len(report.retrain_windows)
    n_runs = max(1, math.ceil(len(report.retrain_windows) / per_run))
    try:
        report.retrain_run_ids = submit(settings, n_runs, {TRIGGER_TAG: "forget", REQUEST_TAG: report.request_id})
        report.status = "retrain_requested"
    except (RuntimeError, OSError) as exc:
        report.retrain_error = str(exc)
        report.status = "retrain_failed"
    _save(settings, Warehouse(settings.paths.warehouse, lock_timeout_s=300), report)
    return report


def forget_requests(settings: Settings) -> pl.DataFrame:
    """``monitor.forget_requests``, oldest first (empty frame before the first request)."""
    return Warehouse(settings.paths.warehouse).forget_requests()


# -- steps ---------------------------------------------------------------------------------------------


def _plan(match: ErasureMatch, report: ForgetReport) -> _Plan:
    """Versions trained / derived / evaluated on the matched rows and the windows to retrain (fills
    ``report``'s records, versions and per-window counts)."""
    report.records = match.rows.to_dicts()
    roles: dict[str, set[str]] = {}
    for version, role, _n in match.ledger:
        roles.setdefault(str(version), set()).add(role)
    trained = sorted((v for v, r in roles.items() if r & set(TRAINED_ROLES)), key=_vkey)
    children = _lineage([(v, p) for v, p, _ in match.updates])
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
    windows_of = {str(v): list(w) for v, _, w in match.updates}
    report.deleted_by_window = _counts_by_window(match.rows, match.rejects)
    return _Plan(
        match=match,
        trained=trained,
        derived=derived,
        retire=retire,
        retrain={w for v in retire for w in windows_of.get(v, [])},
        window_keys=sorted(set(match.rows["window_key"].to_list()) | set(match.rejects["window_key"].to_list())),
    )


def _delete(wh: Warehouse, report: ForgetReport, plan: _Plan, *, actor: str, reason: str, n_ids: int) -> dict:
    """Step 3: delete the rows, retire the versions and record the request; returns rows deleted per table."""
    retire = [
        (
            v,
            f"forget request {report.request_id}: "
            + ("trained on deleted records" if v in plan.trained else "fine-tuned from a version that was"),
        )
        for v in sorted(plan.retire - plan.match.retired, key=_vkey)
    ]
    request = {
        "request_id": report.request_id,
        "actor": actor,
        "reason": reason,
        "criteria": json.dumps({"criteria": report.criteria, "ids": n_ids}),
        "record_ids": report.record_ids,
        "windows": plan.window_keys,
        "trained_versions": report.trained_versions,
        "derived_versions": report.derived_versions,
        "evaluated_versions": report.evaluated_versions,
        "champion_before": report.champion_before,
        "retrain_windows": sorted(plan.retrain),
    }
    return wh.erase(plan.match.rows, plan.match.rejects, window_keys=plan.window_keys, retire=retire, request=request)


def _tag_versions(registry, report: ForgetReport, plan: _Plan) -> None:
    """Step 5: tag every affected version (and the base whose tokenizer saw the records) with the request."""
    roles = report.version_roles
    for v in sorted(roles, key=_vkey) + sorted(plan.derived, key=_vkey):
        tags = {
            "streamtune.forget_requests": _append(
                registry.version_tags(v).get("streamtune.forget_requests"), report.request_id
            )
        }
        if v in plan.trained:
            tags["streamtune.contains_deleted"] = "true"
        elif v in plan.derived:
            tags["streamtune.derived_from_deleted"] = "true"
        else:
            tags["streamtune.evaluated_on_deleted"] = "true"
        if v in plan.retire:
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


def _move_champion(registry, wh: Warehouse, report: ForgetReport, plan: _Plan, base: str | None, actor: str) -> None:
    """Step 5: when the champion is retired, move the alias back to its newest ancestor that is not retired
    (else the base) and record the rollback."""
    champion = report.champion_before
    if champion not in plan.retire:
        return
    parents = {str(v): (None if p is None else str(p)) for v, p, _ in plan.match.updates}
    target = champion
    while target in plan.retire or target in plan.match.retired:
        target = parents.get(target)
        if target is None:
            break
    target = target or base
    if target and target != champion:
        why = f"forget request {report.request_id}: v{champion} was trained on deleted records"
        registry.rollback_champion(target, why, actor=actor)
        wh.record_rollback(champion, target, why, actor)


def _delete_artifacts(registry, report: ForgetReport, plan: _Plan) -> None:
    """Step 5: delete the retired versions' artifacts (weights, optimizer state, generations, snapshot
    manifest) and the evaluated versions' sample generations through MLflow; tag each retired version
    ``streamtune.artifacts_deleted`` with the request id; drop a ``challenger`` alias left on a retired one."""
    retired = sorted(plan.retire, key=_vkey)
    evaluated = [v for v in report.evaluated_versions if v not in plan.retire]
    done = delete_version_artifacts(registry, retired, evaluated)
    report.files["mlflow_artifacts"] = done.deleted
    if done.errors:
        report.files["mlflow_artifact_errors"] = done.errors
    failed = {line.split(":", 1)[0].removeprefix("version ") for line in done.errors}
    for v in retired:
        if v not in failed:
            registry.tag_version(v, {"streamtune.artifacts_deleted": report.request_id})
    if registry.version_for_alias("challenger") in plan.retire:
        registry.client.delete_registered_model_alias(registry.model_name, "challenger")


def _save(settings: Settings, wh: Warehouse, report: ForgetReport) -> None:
    """Write ``<home>/forget/<request id>.json`` and the request's outcome in ``monitor.forget_requests``."""
    out = settings.home / "forget" / f"{report.request_id}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report.report_path = str(out)
    out.write_text(json.dumps(report.to_dict(), indent=2, default=str))
    wh.finish_forget_request(
        report.request_id,
        champion_after=report.champion_after,
        retrain_run_ids=report.retrain_run_ids,
        status=report.status,
        report_path=report.report_path,
    )


# -- helpers -----------------------------------------------------------------------------------------


def _lineage(updates: list[tuple[str, str | None]]) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {}
    for version, parent in updates:
        if parent is not None:
            children.setdefault(str(parent), []).append(str(version))
    return children


def _vkey(v: str) -> tuple[int, str]:
    return (int(v), "") if str(v).isdigit() else (1 << 30, str(v))


def _append(existing: str | None, request_id: str) -> str:
    items = [x for x in (existing or "").split(",") if x]
    return ",".join(items + ([request_id] if request_id not in items else []))


def _registry(settings: Settings):
    if not (settings.mlflow_tracking_uri or settings.paths.mlflow_db.exists()):
        return None
    return open_registry(settings)


def _counts_by_window(rows: pl.DataFrame, rejects: pl.DataFrame) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (w,), g in rows.group_by(["window_key"]):
        out.setdefault(w, {})["records"] = g.height
    for (w,), g in rejects.group_by(["window_key"]):
        out.setdefault(w, {})["rejects"] = g.height
    return dict(sorted(out.items()))


def _remove_dirs(dirs: list[Path]) -> list[str]:
    done = []
    for d in dirs:
        if d.is_dir():
            shutil.rmtree(d)
            done.append(d.name)
    return done
