"""Build the bundled demo stream: one JSON Lines window per month of public PyPI package summaries.

    python scripts/build_demo_stream.py    # writes data/demo/pypi-2024-09.jsonl ... pypi-2025-08.jsonl
    python scripts/build_demo_stream.py --rows 500 --seed 1 --out /tmp/demo

For each month 2024-09 ... 2025-08 it takes a seeded random sample of at most ``--rows`` packages
whose latest release falls in that month, and writes one record per line:

    {"id": "<name>==<version>", "text": <summary>, "ts": "<month>-01T00:00:00Z",
     "package": <name>, "version": <version>}

Rows are kept exactly as in the source (odd or empty summaries included: the quality gate is
supposed to quarantine them). The output is deterministic: the sample depends only on the source
rows, ``--rows`` and ``--seed`` (not on the source's row order or the Python/polars version), and
re-running produces identical bytes. The script then reads every window back through
``quality.readers`` and ``quality.suite`` with the default ``QualityConfig`` and writes
``README.md`` in the output folder with the per-month counts, including the topic shift (rows
mentioning MCP or agents).
"""

import argparse
import json
import random
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "pypi_summaries_2023_2026.parquet"
DEFAULT_OUT = REPO / "data" / "demo"
MONTHS = tuple(f"{y}-{m:02d}" for y, m in [(2024, m) for m in range(9, 13)] + [(2025, m) for m in range(1, 9)])

MCP_REGEX = r"\bMCP\b|(?i:\bmodel context protocol\b)"  # the acronym case-sensitively, the full name in any case
AGENT_REGEX = r"(?i)\bagent"  # agent, agents, agentic, AgentOps; not "reagent" or "useragent"
RECORD_SHAPE = (
    '{"id": "<name>==<version>", "text": <summary>, "ts": "<month>-01T00:00:00Z", '
    '"package": <name>, "version": <version>}'
)
RULE_COLUMNS = ["text_missing", "text_too_short", "text_too_long", "text_control_chars"]  # = quality.suite.RULES


def sample_month(source: pl.DataFrame, month: str, rows: int, seed: int) -> pl.DataFrame:
    """Seeded sample of at most ``rows`` rows of ``month`` (columns month, name, version, summary).

    Rows are first put in a canonical order so the sample does not depend on the file's row order;
    the returned order is the sample's (shuffled) order, so a window is not alphabetical."""
    canonical = source.filter(pl.col("month") == month).sort(["name", "version", "summary"], nulls_last=True)
    rng = random.Random(f"{seed}:{month}")  # str seeds hash with sha512: stable across runs and versions
    picked = rng.sample(range(canonical.height), min(rows, canonical.height))
    return canonical[picked]


def record_line(month: str, name: str, version: str, summary: str | None) -> str:
    record = {
        "id": f"{name}=={version}",
        "text": summary,
        "ts": f"{month}-01T00:00:00Z",
        "package": name,
        "version": version,
    }
    return json.dumps(record, ensure_ascii=False) + "\n"


def build(source: Path, out: Path, rows: int, seed: int) -> list[Path]:
    """Write one ``pypi-YYYY-MM.jsonl`` per month of MONTHS into ``out``; returns the paths."""
    df = pl.read_parquet(source, columns=["month", "name", "version", "summary"])
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for month in MONTHS:
        sample = sample_month(df, month, rows, seed)
        if sample.height == 0:
            raise SystemExit(f"{source} has no rows for {month}")
        path = out / f"pypi-{month}.jsonl"
        with path.open("w", encoding="utf-8", newline="\n") as f:
            f.writelines(record_line(month, *row) for row in sample.select("name", "version", "summary").iter_rows())
        paths.append(path)
    return paths


def summarize(paths: list[Path]) -> pl.DataFrame:
    """Per window: rows, rejects, quarantine counts under the default QualityConfig, near-empty
    texts (at most 2 characters after stripping; they pass min_chars=1), MCP/agent rows."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from quality.readers import read_window_file
    from quality.suite import RULES, QualityConfig, curate_window

    fixed = datetime(2000, 1, 1, tzinfo=UTC)  # every record has a ts; keeps the run deterministic
    stats = []
    for path in paths:
        month = path.stem.removeprefix("pypi-")
        parsed = read_window_file(path, month, ingested_at=fixed)
        verdict = curate_window(parsed.rows, QualityConfig())
        text = parsed.rows.get_column("text").fill_null("")
        mcp, agent = text.str.contains(MCP_REGEX), text.str.contains(AGENT_REGEX)
        near_empty = verdict.curated.get_column("text").str.strip_chars().str.len_chars() <= 2
        stats.append(
            {
                "month": month,
                "rows": parsed.source_rows,
                "rejects": parsed.rejects.height,
                "quarantined": verdict.quarantine.height,
                **{rule: verdict.counts[rule] for rule in RULES},
                "near_empty": int(near_empty.sum()),
                "near_empty_examples": sorted(verdict.curated.filter(near_empty).get_column("text").to_list()),
                "mcp": int(mcp.sum()),
                "agent": int(agent.sum()),
                "mcp_or_agent": int((mcp | agent).sum()),
                "bytes": path.stat().st_size,
            }
        )
    return pl.DataFrame(stats)


def readme(stats: pl.DataFrame, rows: int, seed: int) -> str:
    def table(columns: list[str], header: list[str]) -> str:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in stats.select(columns).iter_rows()]
        return "\n".join(lines)

    shift = stats.with_columns(share=(pl.col("mcp_or_agent") / pl.col("rows") * 100).round(1).cast(pl.String) + "%")
    topic = ["| month | rows | MCP | agent | either | share |", "|---|---|---|---|---|---|"]
    topic += [
        f"| {r['month']} | {r['rows']} | {r['mcp']} | {r['agent']} | {r['mcp_or_agent']} | {r['share']} |"
        for r in shift.iter_rows(named=True)
    ]
    total_kb = stats.get_column("bytes").sum() / 1024
    quarantined, rejected = stats.get_column("quarantined").sum(), stats.get_column("rejects").sum()
    if quarantined == 0 and rejected == 0:
        gate_note = (
            "Every line parses and no row is quarantined under the defaults: the sampled summaries have\n"
            "no empty, whitespace-only, over-long (> 2000 chars) or control-character texts."
        )
    else:
        gate_note = f"{rejected} lines are rejected and {quarantined} rows quarantined in total under the defaults."
    examples = sorted({t for ts in stats.get_column("near_empty_examples").to_list() for t in ts})
    gate_note += (
        f"\n{stats.get_column('near_empty').sum()} curated summaries have at most 2 characters after stripping "
        f"({', '.join(json.dumps(t, ensure_ascii=False) for t in examples)});\nthey pass `min_chars=1`, "
        "and `QualityConfig(min_chars=3)` would quarantine them (column `near_empty`)."
    )
    return f"""# Demo stream: PyPI package summaries, 2024-09 to 2025-08

Twelve monthly windows (`pypi-YYYY-MM.jsonl`, {stats.get_column("rows").sum():,} records, {total_kb:,.0f} KiB in
total) for running streamtune end to end without a live source. Drop them into a landing folder one
at a time to replay a year of a real, drifting text stream.

Generated by `scripts/build_demo_stream.py`; do not edit by hand.

## Source and sampling
- Source: `shared/data/pypi_summaries_2023_2026.parquet` (columns `month`, `name`, `version`,
  `summary`: the summary of each package's latest release, with that release's month).
- Per month: a seeded random sample of at most {rows:,} rows (`random.Random("<seed>:<month>")` over
  the month's rows in canonical `(name, version, summary)` order; seed {seed}), written in sample
  order. Summaries are kept exactly as in the source: odd ones are left for the quality gate.
- Record: `{RECORD_SHAPE}`,
  one JSON object per line, UTF-8, `\\n` line ends. `package` and `version` end up in `metadata`.

## License note
Package names, versions and summaries are public metadata that each project's maintainers
published on PyPI. They are redistributed here unmodified, as a small sample, for demonstration
and testing; streamtune claims no rights over them. To drop a record, remove it from the source
and rebuild.

## Rebuild
```bash
python scripts/build_demo_stream.py            # --source PATH --out DIR --rows {rows} --seed {seed}
```
Deterministic: re-running produces identical bytes (this README included).

## What the gate does with it (default `QualityConfig`)
`rows` = lines in the file; `rejects` = unparseable lines; the rule columns count rows failing each
rule (`quality.suite.RULES`).

{
        table(
            ["month", "rows", "rejects", "quarantined", *RULE_COLUMNS, "near_empty"],
            ["month", "rows", "rejects", "quarantined", *RULE_COLUMNS, "near_empty"],
        )
    }

{gate_note}

## Topic shift
Rows whose summary mentions MCP (`\\bMCP\\b`, or "model context protocol" in any case) or agents
(`(?i)\\bagent`: agent, agents, agentic):

{chr(10).join(topic)}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source", type=Path, default=DEFAULT_SOURCE, help="Parquet with month, name, version, summary"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: data/demo)")
    parser.add_argument("--rows", type=int, default=2000, help="maximum rows per month")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be >= 1")
    paths = build(args.source, args.out, args.rows, args.seed)
    stats = summarize(paths)
    (args.out / "README.md").write_text(readme(stats, args.rows, args.seed), encoding="utf-8", newline="\n")
    with pl.Config(tbl_rows=20, tbl_cols=20, tbl_width_chars=200):
        print(stats.drop("near_empty_examples"))
    print(f"wrote {len(paths)} windows, {stats.get_column('bytes').sum():,} bytes, to {args.out}")


if __name__ == "__main__":
    main()
