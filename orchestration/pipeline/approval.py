"""Approval mode (``[gate] require_approval = true``): a challenger that passes the promotion gate waits under
the MLflow ``challenger`` alias until a person promotes or rejects it. Dagster-free.

``settle_champion`` is the ``champion_model`` step: without approval mode it moves ``champion`` to a
gate-passing challenger (as before); in approval mode it records the challenger as pending in
``train.approvals`` and tags the version ``approval.status = pending``. ``decide`` is ``streamtune promote`` /
``streamtune reject``: it checks everything first (the version exists, it waits for approval, it was not
rejected by the gate, it is not decided yet) and raises ``ApprovalError`` without changing anything otherwise;
then it records the decision (who, why, when) in ``train.approvals`` and as ``approval.*`` version tags and
moves the aliases (promote: ``champion`` to the version; both: ``challenger`` removed from it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from orchestration.pipeline.lineage import PARENT_TAG
from orchestration.store.approvals import ApprovalTables
from orchestration.store.warehouse import Warehouse

if TYPE_CHECKING:
    from orchestration.pipeline.update import UpdateResult
    from training.tracking import ModelRegistry

Decision = Literal["promote", "reject"]


class ApprovalError(ValueError):
    """A promote/reject request that cannot be carried out (unknown version, not waiting for approval, rejected
    by the gate, already decided, or a promotion whose parent is no longer the champion); nothing was changed.
    ``hint`` (may be "") says what to do instead."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class ChampionOutcome:
    """What ``champion_model`` did with one update."""

    champion: str | None
    """The champion version after the step."""
    moved: bool
    """True if the champion alias moved to the update's challenger."""
    pending: list[str] = field(default_factory=list)
    """Versions waiting for ``streamtune promote`` / ``reject``, oldest first (approval mode)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def settle_champion(
    registry: ModelRegistry,
    warehouse: Warehouse,
    update: UpdateResult,
    *,
    require_approval: bool,
    dagster_run_id: str | None,
) -> ChampionOutcome:
    """Move ``champion`` to a gate-passing challenger, or (``require_approval``) hold it for approval.

    A held challenger keeps its ``challenger`` alias, gets the version tags ``approval.status = pending`` and
    ``approval.requested_at`` (UTC ISO-8601) and a pending row in ``train.approvals`` (idempotent: a retried run
    does not reopen a decided version). A rejected update changes nothing.
    """
    approvals = ApprovalTables(warehouse.path, warehouse.lock_timeout_s)
    if update.promote and not require_approval:
        registry.set_alias("champion", update.version)
    elif update.promote and approvals.hold(update.version, registry.version_for_alias("champion"), dagster_run_id):
        registry.tag_version(update.version, {"approval.status": "pending", "approval.requested_at": _now()})
    pending = pending_approvals(warehouse)
    champion = registry.version_for_alias("champion")
    return ChampionOutcome(champion=champion, moved=champion == update.version, pending=pending)


def pending_approvals(warehouse: Warehouse) -> list[str]:
    """Versions waiting for ``streamtune promote`` / ``reject`` (``train.approvals``), oldest request first."""
    return ApprovalTables(warehouse.path, warehouse.lock_timeout_s).approvals("pending")["model_version"].to_list()


@dataclass(frozen=True)
class ApprovalDecision:
    """One carried-out decision."""

    version: str
    decision: Decision
    decided_by: str
    reason: str
    champion_before: str | None
    champion_after: str | None


def _check_decidable(registry: ModelRegistry, warehouse: Warehouse, version: str) -> dict:
    """The pending ``train.approvals`` row of ``version``; raises ``ApprovalError`` unless ``version`` exists and
    waits for approval (nothing is written)."""
    from mlflow.exceptions import MlflowException  # lazy: mlflow (seconds)

    try:
        registry.client.get_model_version(registry.model_name, str(version))
    except MlflowException as e:
        raise ApprovalError(f"model version {version} of {registry.model_name!r} does not exist") from e
    row = ApprovalTables(warehouse.path, warehouse.lock_timeout_s).approval(version)
    if row is None:
        updates = warehouse.updates()
        mine = updates.filter(updates["model_version"] == version)
        if mine.height and not mine["promoted"][0]:
            raise ApprovalError(
                f"v{version} was rejected by the promotion gate ({mine['reason'][0]}); nothing to approve"
            )
        raise ApprovalError(
            f"v{version} is not waiting for approval (only challengers that passed the gate while "
            "[gate] require_approval = true do)"
        )
    if row["status"] != "pending":
        raise ApprovalError(
            f"v{version} was already {row['status']} by {row['decided_by']} at "
            f"{row['decided_at']:%Y-%m-%d %H:%M:%S} UTC ({row['reason']})"
        )
    return row


def _check_parent_is_champion(registry: ModelRegistry, warehouse: Warehouse, version: str, row: dict) -> None:
    """Raises ``ApprovalError`` when the champion is no longer the version ``version`` was trained from.

    The parent is the version tag ``streamtune.parent_version``, else ``train.updates.parent_version``, else the
    champion when the version was held (``train.approvals.champion_before``). Promoting a challenger whose parent
    was since replaced (another promotion, a rollback) would silently drop the newer champion's training or move
    the champion backwards; the person has to reject it or move the champion explicitly.
    """
    parent = registry.version_tags(version).get(PARENT_TAG) or warehouse.update_parent(version)
    parent = parent or row.get("champion_before")
    champion = registry.version_for_alias("champion")
    if parent and champion and str(parent) != champion:
        raise ApprovalError(
            f"v{version} was trained from v{parent}, but the champion is now v{champion}: promoting it would "
            f"replace v{champion} with a model that was not trained from it",
            hint=f"reject it (`streamtune reject --version {version} --reason ...`), or make it the champion "
            f"explicitly with `streamtune rollback --to {version}`",
        )


def decide(
    registry: ModelRegistry, warehouse: Warehouse, version: str, decision: Decision, *, decided_by: str, reason: str
) -> ApprovalDecision:
    """Promote or reject a challenger that waits for approval.

    Order: every check first (``ApprovalError``, nothing changed); then the ``train.approvals`` row (the
    decision on record; a concurrent decision of the same version loses here, still before any alias moved);
    then the version tags ``approval.status`` (``promoted`` | ``rejected``), ``approval.by``, ``approval.reason``,
    ``approval.at``, ``approval.champion_before``; then the aliases.

    Args:
        version: the registered model version (``"3"``).
        decision: ``"promote"`` (``champion`` moves to it) or ``"reject"`` (``champion`` stays).
        decided_by: who decided (the OS user, or ``--by``).
        reason: why (free text the person typed; stored in DuckDB and as a version tag).

    Raises:
        ApprovalError: unknown version, not waiting for approval, rejected by the gate, already decided, an
            empty ``decided_by`` / ``reason``, or (promote) its parent is no longer the champion
            (``_check_parent_is_champion``; the error's ``hint`` says: reject it, or ``rollback --to`` it).
    """
    version = str(version).strip().removeprefix("v")
    if not decided_by.strip() or not reason.strip():
        raise ApprovalError("a decision needs who (--by) and why (--reason), both non-empty")
    row = _check_decidable(registry, warehouse, version)
    if decision == "promote":
        _check_parent_is_champion(registry, warehouse, version, row)
    status = "promoted" if decision == "promote" else "rejected"
    if not ApprovalTables(warehouse.path, warehouse.lock_timeout_s).decide(version, status, decided_by, reason):
        raise ApprovalError(f"v{version} was decided by someone else just now; see `streamtune approvals`")
    before = registry.version_for_alias("champion")
    tags = {"approval.status": status, "approval.by": decided_by, "approval.reason": reason, "approval.at": _now()}
    registry.tag_version(version, {**tags, "approval.champion_before": before or ""})
    if decision == "promote":
        registry.set_alias("champion", version)
    if registry.version_for_alias("challenger") == version:
        registry.client.delete_registered_model_alias(registry.model_name, "challenger")
    return ApprovalDecision(version, decision, decided_by, reason, before, registry.version_for_alias("champion"))
