"""``streamtune forget``: delete records everywhere and request a retrain without them."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from orchestration.cli.common import BAD_INPUT, CliError, HomeOpt, console, home_settings

FORGET_HINT = "e.g. streamtune forget --where \"package = 'pkg3'\" or --id REC-1"


def forget(
    home: HomeOpt = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            "--where",
            help='"<field> = <value>": a record field (id, text, window_key) or metadata key; repeatable (OR)',
        ),
    ] = None,
    ids: Annotated[list[str] | None, typer.Option("--id", help="record id; repeatable")] = None,
    reason: Annotated[str, typer.Option("--reason", help="stored with the request")] = "deletion request",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report what would be deleted; change nothing")] = False,
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain/--no-retrain",
            help="queue fine-tune runs that retrain the affected windows without the records (the daemon runs them)",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Delete records everywhere (raw, curated, quarantine, replay buffer, landing files, snapshots), mark
    every model version trained on them, and request a retrain without them (see orchestration/pipeline/forget.py)."""
    # lazy: the erasure step imports duckdb, polars and pyarrow (~0.5 s)
    from orchestration.pipeline.forget import ForgetError, request_retrain
    from orchestration.pipeline.forget import forget as forget_records
    from orchestration.pipeline.forget_criteria import EmptyValueError, check_values

    settings = home_settings(home)
    try:
        check_values(list(where or []), list(ids or []))
    except EmptyValueError as e:
        raise CliError(str(e), FORGET_HINT, code=BAD_INPUT) from e
    except ForgetError as e:
        raise CliError(str(e), FORGET_HINT) from e
    try:
        report = forget_records(
            settings,
            wheres=list(where or []),
            ids=list(ids or []),
            reason=reason,
            dry_run=dry_run,
        )
    except ForgetError as e:
        raise CliError(str(e), FORGET_HINT) from e
    if retrain and report.retrain_windows and not dry_run:
        from orchestration.cli.runs import submit_finetune_runs  # lazy: loads dagster, only to queue runs

        request_retrain(settings, report, submit_finetune_runs)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    print_forget_report(report, dry_run)


def print_forget_report(report, dry_run: bool) -> None:
    """The human-readable ``streamtune forget`` report of an ``orchestration.pipeline.forget`` report."""
    console.print(
        f"{'dry run: ' if dry_run else ''}{report.request_id}: {len(report.records)} record(s) matched "
        f"in {len(report.deleted_by_window)} window(s)"
    )
    table = Table("table", "rows deleted" if not dry_run else "rows to delete")
    for t, n in report.deleted.items():
        table.add_row(t, str(n))
    console.print(table)
    roles = ", ".join(f"v{v} ({'/'.join(r)})" for v, r in report.version_roles.items()) or "none"
    console.print(f"versions whose ledger contains them: {roles}")
    for line in _conditional_lines(report, dry_run):
        console.print(line)
    for kind, items in report.files.items():
        if items:
            console.print(f"{kind}: {'; '.join(items)}")
    if report.report_path:
        console.print(f"report: {report.report_path}")


def _conditional_lines(report, dry_run: bool) -> list[str]:
    """The report lines that only show when their part of the report is set, in print order."""
    champion_moved = report.champion_before != report.champion_after and not dry_run
    lines = [
        report.derived_versions and f"fine-tuned from those: {', '.join('v' + v for v in report.derived_versions)}",
        report.base_tokenizer_affected
        and (
            f"[yellow]the base tokenizer (v{report.base_tokenizer_affected}) was built from these records"
            "[/yellow]: rebuild the lineage from a new base to remove them from the vocabulary"
        ),
        champion_moved and f"champion: v{report.champion_before} -> v{report.champion_after}",
        report.retrain_windows and f"windows to retrain: {', '.join(report.retrain_windows)}",
        report.retrain_run_ids
        and (
            f"queued finetune run(s): {', '.join(r[:8] for r in report.retrain_run_ids)} "
            "(run `streamtune run` if no daemon is running)"
        ),
        report.retrain_error and f"[red]retrain not requested[/red]: {report.retrain_error}",
    ]
    return [line for line in lines if line]
