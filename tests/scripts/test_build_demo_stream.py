"""scripts/build_demo_stream.py on a tiny synthetic source: format, sampling bounds, determinism."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("build_demo_stream", REPO / "scripts" / "build_demo_stream.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_source(path: Path, months: tuple[str, ...]) -> None:
    rows = [
        (m, f"pkg{i}", f"0.{i}", f"{m} summary {i} with an MCP agent" if i == 0 else f"summary {i}")
        for m in months
        for i in range(5)
    ]
    rows.append((months[0], "blank", "1.0", ""))  # kept verbatim; the gate quarantines it
    rows.append(("2023-01", "outside", "1.0", "not in any window"))
    pl.DataFrame(rows, schema=["month", "name", "version", "summary"], orient="row").write_parquet(path)


def test_build_is_deterministic_and_keeps_rows_verbatim(tmp_path):
    script = load_script()
    source = tmp_path / "src.parquet"
    tiny_source(source, script.MONTHS)
    out1, out2 = tmp_path / "a", tmp_path / "b"
    script.main(["--source", str(source), "--out", str(out1), "--rows", "4", "--seed", "0"])
    script.main(["--source", str(source), "--out", str(out2), "--rows", "4", "--seed", "0"])

    names = sorted(p.name for p in out1.iterdir())
    assert names == ["README.md"] + [f"pypi-{m}.jsonl" for m in script.MONTHS]
    for name in names:
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes(), name

    first = [json.loads(line) for line in (out1 / "pypi-2024-09.jsonl").read_text().splitlines()]
    assert len(first) == 4  # 6 source rows, --rows 4
    for record in first:
        assert list(record) == ["id", "text", "ts", "package", "version"]
        assert record["id"] == f"{record['package']}=={record['version']}"
        assert record["ts"] == "2024-09-01T00:00:00Z"
    assert len({r["id"] for r in first}) == 4

    everything = [
        json.loads(line) for m in script.MONTHS for line in (out1 / f"pypi-{m}.jsonl").read_text().splitlines()
    ]
    assert all(r["package"] != "outside" for r in everything)
    readme = (out1 / "README.md").read_text()
    assert "| month | rows | MCP | agent | either | share |" in readme


def test_seed_changes_the_sample(tmp_path):
    script = load_script()
    source = pl.DataFrame(
        {
            "month": ["2024-09"] * 50,
            "name": [f"p{i}" for i in range(50)],
            "version": ["1"] * 50,
            "summary": [f"s{i}" for i in range(50)],
        }
    )
    a = script.sample_month(source, "2024-09", 10, seed=0)
    b = script.sample_month(source, "2024-09", 10, seed=1)
    shuffled = script.sample_month(source.reverse(), "2024-09", 10, seed=0)
    assert a.get_column("name").to_list() != b.get_column("name").to_list()
    assert a.equals(shuffled)  # independent of the source's row order


def test_quality_imports_neither_dagster_mlflow_nor_gx_eagerly():
    code = (
        "import sys, quality, quality.schema, quality.readers, quality.suite; "
        "print(sorted(m for m in ('dagster', 'mlflow', 'great_expectations') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
