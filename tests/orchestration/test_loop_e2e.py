"""End to end through the real Dagster daemon: the same code path as `streamtune demo` / `run --until-idle`."""

import json
import re
import subprocess
import sys

import duckdb
import pytest
from mlflow.tracking import MlflowClient
from st_helpers import tiny_home, window_records, write_window

from orchestration.cli.daemon import Daemon, open_instance
from orchestration.partitions import WINDOWS_PARTITION
from orchestration.sources.landing import replay

pytestmark = pytest.mark.slow


def test_three_windows_flow_through_sensor_ingest_finetune_and_registry(tmp_path):
    settings = tiny_home(tmp_path / "home", max_windows_per_update=1)
    source = tmp_path / "stream"
    for i in range(3):
        write_window(source, f"s-2025-0{i + 1}.jsonl", window_records(i, 60), extra_lines=["{broken"] if i == 1 else ())

    with Daemon(settings) as daemon:
        replay(source, settings.paths.landing)
        summary = daemon.wait_until_idle(timeout_s=900)
        server = (daemon.code_server.proc.pid, daemon.code_server.port)
    assert summary.failures == []
    # idle once every sensor ticked after the last run ended, not after a fixed quiet time
    assert summary.idle_by == "sensor ticks"
    # one long-lived code server (orchestration.cli.code_server) launched every run, however long the loop ran:
    # the daemon reached it through the workspace's grpc_server entry and did not start servers of its own
    with open_instance(settings) as instance:
        ports = {json.loads(r.tags[".dagster/grpc_info"])["port"] for r in instance.get_runs()}
    assert ports == {server[1]}
    starts = re.findall(r"Started Dagster code server .* in process (\d+)", daemon.log_path.read_text())
    assert starts == [str(server[0])]
    assert summary.runs.get("SUCCESS", 0) >= 6  # 3 ingest + 3 fine-tune runs

    with duckdb.connect(str(settings.paths.warehouse), read_only=True) as con:
        per_window = con.execute(
            "SELECT window_key, source_rows, parsed_rows, rejected_rows FROM raw.windows ORDER BY window_key"
        ).fetchall()
        assert per_window == [("s-2025-01", 60, 60, 0), ("s-2025-02", 61, 60, 1), ("s-2025-03", 60, 60, 0)]
        assert con.execute("SELECT count(*) FROM raw.rejects").fetchall() == [(1,)]
        assert con.execute("SELECT count(DISTINCT window_key) FROM train.ledger WHERE role = 'train'").fetchall() == [
            (3,)
        ]
        updates = con.execute(
            "SELECT model_version, window_keys, trigger FROM train.updates ORDER BY created_at"
        ).fetchall()
    assert [u[1] for u in updates] == [["s-2025-01"], ["s-2025-02"], ["s-2025-03"]]
    assert {u[2] for u in updates} <= {"new_data", "schedule"}

    client = MlflowClient(settings.tracking_uri)
    exp = client.get_experiment_by_name(settings.experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 4  # base model + 3 updates
    versions = client.search_model_versions(f"name='{settings.model_name}'")
    assert len(versions) == 4
    champion = client.get_model_version_by_alias(settings.model_name, "champion")
    assert champion.tags["gate.decision"] == "promoted"

    with open_instance(settings) as instance:
        assert sorted(instance.get_dynamic_partitions(WINDOWS_PARTITION)) == ["s-2025-01", "s-2025-02", "s-2025-03"]

    # the CLI reads the same home
    out = subprocess.run(
        [sys.executable, "-m", "orchestration.cli.app", "status", "--home", str(settings.home), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    status = json.loads(out.stdout)
    assert status["champion"] == str(champion.version)
    assert [w["window_key"] for w in status["windows"]] == ["s-2025-01", "s-2025-02", "s-2025-03"]

    # restart: the daemon comes back over the same home and finds nothing new to do
    with Daemon(settings) as daemon:
        again = daemon.wait_until_idle(timeout_s=300, settle_s=30)
    assert again.runs == {} and again.idle_by == "sensor ticks"
