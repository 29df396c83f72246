"""Team profile on real servers: Dagster instance on PostgreSQL, MLflow tracking server on PostgreSQL with a
proxied artifact store, selected by environment variables only; plus the deploy/ files checked with the
validators that exist here (Dagster's instance config schema, YAML parsers).

PostgreSQL comes from Debian's package (``tests/team_pg_fixtures.py``); without it these tests skip.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from st_helpers import tiny_home, window_records, write_window
from team_pg_fixtures import pg_server, start_mlflow_server  # noqa: F401  (pg_server is a fixture)

from orchestration.cli.daemon import Daemon, open_instance, prepare_instance
from orchestration.config.profiles import PG_URL_ENV, artifact_location, instance_yaml, profile_of, redact_url
from orchestration.partitions import WINDOWS_PARTITION
from orchestration.sources.landing import replay

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"


def _validate_instance_dir(directory: Path) -> dict:
    """Dagster's own validation of a dagster.yaml (raises DagsterInvalidConfigError when invalid)."""
    from dagster._core.instance.config import dagster_instance_config

    config, _ = dagster_instance_config(str(directory))
    return config


def test_embedded_profile_is_the_default(tmp_path, monkeypatch):
    monkeypatch.delenv(PG_URL_ENV, raising=False)
    monkeypatch.delenv("STREAMTUNE_MLFLOW_TRACKING_URI", raising=False)
    settings = tiny_home(tmp_path / "home")
    profile = profile_of(settings)
    assert (profile.name, profile.dagster_storage) == ("embedded", "sqlite")
    assert profile.mlflow_tracking_uri.startswith("sqlite:///")
    assert artifact_location(settings) == settings.paths.mlartifacts.as_uri()
    template = "run_coordinator: {}\n"
    assert instance_yaml(settings, template) == template


def test_team_profile_from_env_renders_a_valid_postgres_instance_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv(PG_URL_ENV, "postgresql://u:s3cret@db.example:5432/dagster")
    monkeypatch.setenv("STREAMTUNE_MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    settings = tiny_home(tmp_path / "home")
    profile = profile_of(settings)
    assert (profile.name, profile.dagster_storage) == ("team", "postgres")
    assert artifact_location(settings) == ""  # the server proxies artifacts
    assert "s3cret" not in profile.describe() and redact_url(settings.dagster_pg_url).endswith(
        "u:***@db.example:5432/dagster"
    )
    d = tmp_path / "inst"
    d.mkdir()
    from importlib import resources

    template = resources.files("orchestration").joinpath("templates/dagster.yaml").read_text()
    text = instance_yaml(settings, template)
    assert "s3cret" not in text
    (d / "dagster.yaml").write_text(text)
    config = _validate_instance_dir(d)
    assert config["storage"] == {"postgres": {"postgres_url": {"env": PG_URL_ENV}}}
    assert config["concurrency"]["pools"]["default_limit"] == 1


def test_dagster_instance_opens_on_postgres_with_pools(pg_server, tmp_path, monkeypatch):
    url = pg_server.create_database("dagster_instance")
    monkeypatch.setenv(PG_URL_ENV, url)
    monkeypatch.delenv("STREAMTUNE_MLFLOW_TRACKING_URI", raising=False)
    settings = tiny_home(tmp_path / "home")
    prepare_instance(settings)
    with open_instance(settings) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        instance.add_dynamic_partitions(WINDOWS_PARTITION, ["w-1"])
        assert instance.get_dynamic_partitions(WINDOWS_PARTITION) == ["w-1"]
        # an event write (dagster-postgres NOTIFYs with psycopg2-style parameters: needs that driver)
        import dagster as dg

        instance.report_runless_asset_event(dg.AssetMaterialization("forget_me_not", partition="w-1"))
        assert instance.get_latest_materialization_event(dg.AssetKey("forget_me_not")) is not None
    assert not list(settings.paths.dagster_home.rglob("*.db"))  # nothing went to sqlite
    rows = dict(
        pg_server.query("dagster_instance", "SELECT concurrency_key, count(*) FROM concurrency_slots GROUP BY 1")
    )
    assert rows == {"duckdb": 1, "training": 1}
    assert pg_server.query("dagster_instance", "SELECT partition FROM dynamic_partitions") == [("w-1",)]


@pytest.mark.slow
def test_loop_runs_on_postgres_dagster_and_mlflow_server(pg_server, tmp_path, monkeypatch):
    """sensor -> ingest -> fine-tune -> registry -> champion alias, through the real daemon, with every
    Dagster record in Postgres and every MLflow record in a real tracking server on Postgres."""
    dagster_url = pg_server.create_database("dagster_e2e")
    artifacts = tmp_path / "mlflow-artifacts"
    with start_mlflow_server(pg_server, "mlflow_e2e", artifacts, tmp_path / "mlflow-server.log") as server:
        monkeypatch.setenv(PG_URL_ENV, dagster_url)
        monkeypatch.setenv("STREAMTUNE_MLFLOW_TRACKING_URI", server.url)
        settings = tiny_home(tmp_path / "home", max_windows_per_update=1, drift={"enabled": False})
        assert profile_of(settings).name == "team"
        source = tmp_path / "stream"
        for i in range(2):
            write_window(source, f"t-2025-0{i + 1}.jsonl", window_records(i, 50))

        with Daemon(settings) as daemon:
            replay(source, settings.paths.landing)
            summary = daemon.wait_until_idle(timeout_s=900)
        assert summary.failures == []
        assert summary.runs.get("SUCCESS", 0) >= 4  # 2 ingest + 2 fine-tune

        # Dagster: the instance lives in Postgres, not in sqlite files under DAGSTER_HOME
        yaml_text = (settings.paths.dagster_home / "dagster.yaml").read_text()
        assert "postgres_url" in yaml_text and pg_server.password not in yaml_text
        assert not list(settings.paths.dagster_home.rglob("*.db"))
        db = "dagster_e2e"
        by_job = dict(
            pg_server.query(db, "SELECT pipeline_name, count(*) FROM runs WHERE status = 'SUCCESS' GROUP BY 1")
        )
        assert by_job.get("ingest_window") == 2 and by_job.get("finetune", 0) >= 2
        parts = pg_server.query(
            db,
            "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = %s ORDER BY partition",
            (WINDOWS_PARTITION,),
        )
        assert parts == [("t-2025-01",), ("t-2025-02",)]
        bodies = [
            b
            for (b,) in pg_server.query(db, "SELECT instigator_body FROM instigators WHERE instigator_type = 'SENSOR'")
        ]
        landing_state = [json.loads(b) for b in bodies if '"landing_sensor"' in b]
        assert landing_state and "t-2025-02" in json.dumps(landing_state)  # sensor cursor persisted in Postgres
        n_events = pg_server.query(
            db, "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
        )
        assert n_events[0][0] >= 8
        with open_instance(settings) as instance:
            assert sorted(instance.get_dynamic_partitions(WINDOWS_PARTITION)) == ["t-2025-01", "t-2025-02"]

        # MLflow: runs, versions and aliases through the server; artifacts in its proxied store
        client = MlflowClient(server.url)
        exp = client.get_experiment_by_name(settings.experiment)
        assert exp.artifact_location.startswith("mlflow-artifacts:")
        runs = client.search_runs([exp.experiment_id])
        assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)  # base + 2 updates
        versions = client.search_model_versions(f"name='{settings.model_name}'")
        assert sorted(int(v.version) for v in versions) == [1, 2, 3]
        champion = client.get_model_version_by_alias(settings.model_name, "champion")
        assert champion.tags["gate.decision"] == "promoted" and int(champion.version) >= 2
        v3 = client.get_model_version(settings.model_name, "3")
        assert client.get_run(v3.run_id).data.params["parent_version"] == "2"  # downloaded v2 through the server
        assert client.get_registered_model(settings.model_name).aliases["base"] == "1"
        assert any(p.name == "model.safetensors" for p in artifacts.rglob("*"))
        assert not settings.paths.mlflow_db.exists() and not any(settings.paths.mlartifacts.iterdir())
        mdb = "mlflow_e2e"
        assert pg_server.query(mdb, "SELECT count(*) FROM model_versions")[0][0] == 3
        aliases = dict(pg_server.query(mdb, "SELECT alias, version FROM registered_model_aliases"))
        assert aliases["champion"] == int(champion.version) and aliases["base"] == 1
        assert pg_server.query(mdb, "SELECT count(*) FROM runs WHERE status = 'FINISHED'")[0][0] == 3

        # the CLI reads the same home through the same env
        out = subprocess.run(
            [sys.executable, "-m", "orchestration.cli.app", "status", "--home", str(settings.home), "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(out.stdout)["champion"] == str(champion.version)


# -- deploy/ files ------------------------------------------------------------------------------------


def test_deploy_dagster_yaml_is_valid_and_opens_on_postgres(pg_server, tmp_path, monkeypatch):
    pg_server.create_database("dagster_deploy")
    d = tmp_path / "dagster_home"
    d.mkdir()
    (d / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text())
    config = _validate_instance_dir(d)
    assert "postgres" in config["storage"]
    for key, value in {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(pg_server.port),
        "DAGSTER_PG_USER": "streamtune",
        "DAGSTER_PG_PASSWORD": pg_server.password,
        "DAGSTER_PG_DB": "dagster_deploy",
    }.items():
        monkeypatch.setenv(key, value)
    from dagster import DagsterInstance

    instance = DagsterInstance.from_config(str(d))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        instance.add_dynamic_partitions(WINDOWS_PARTITION, ["deploy-check"])
        assert instance.get_dynamic_partitions(WINDOWS_PARTITION) == ["deploy-check"]
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    finally:
        instance.dispose()


def test_deploy_compose_file_has_the_services_and_env_streamtune_needs():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "minio", "mlflow", "streamtune-code", "dagster-webserver", "dagster-daemon"} <= set(services)
    mlflow_cmd = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri postgresql" in mlflow_cmd and "--artifacts-destination s3://" in mlflow_cmd
    for name in ("streamtune-code", "dagster-daemon", "dagster-webserver"):
        env = services[name]["environment"]
        assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PASSWORD", "STREAMTUNE_MLFLOW_TRACKING_URI"} <= set(env)
    code_env = services["streamtune-code"]["environment"]
    assert (
        code_env["STREAMTUNE_HOME"] == "/streamtune"
        and code_env["STREAMTUNE_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    )
    assert any(str(v).endswith(":/streamtune") for v in services["streamtune-code"]["volumes"])


def test_deploy_helm_values_configure_postgres_k8s_launcher_and_the_user_code():
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    assert values["postgresql"]["enabled"] is False and values["postgresql"]["postgresqlHost"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "orchestration.definitions"]
    env_names = {e["name"] for e in deployment["env"]}
    assert {"STREAMTUNE_HOME", "STREAMTUNE_MLFLOW_TRACKING_URI"} <= env_names
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert any(m["mountPath"] == "/streamtune" for m in launcher["volumeMounts"])
    pools = {
        p["key"]
        for p in values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    }
    assert pools == {"streamtune/pipeline"}
