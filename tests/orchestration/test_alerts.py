"""Alerts: a real HTTP server on 127.0.0.1 (ephemeral port) receives the webhook POSTs; a real Dagster instance
holds the events the sensors read; the alert log is a real file in the home. No record text in any payload."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
from st_helpers import tiny_home

from orchestration.alert_sensors import build_gate_alert_sensor, build_run_failure_alert_sensor
from orchestration.config.operations import AlertsConfig
from orchestration.config.tables import SettingsError
from orchestration.pipeline.alerts import Alert, drift_alert, gate_rejection_alert, send_alert

SECRET = "Alice Example lives at 1 Secret Road"
"""Record text that must never reach an alert."""


class Receiver:
    """A webhook receiver: ``ThreadingHTTPServer`` on an ephemeral loopback port; answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict] = []
        self.raw: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.raw.append(body)
                outer.bodies.append(json.loads(body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/streamtune"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_an_alert_is_posted_as_slack_json_and_logged(tmp_path, receiver):
    alert = gate_rejection_alert("7", ["w-01", "w-02"], {"champion_new_bpb": 2.5, "challenger_new_bpb": 2.6}, "run-1")
    delivery = send_alert(alert, AlertsConfig(webhook_url=receiver.url), tmp_path)
    assert delivery.status == 200 and delivery.error is None
    (body,) = receiver.bodies
    assert body["text"].startswith("[streamtune] gate rejected challenger v7 (windows w-01, w-02)")
    assert body["streamtune"]["kind"] == "gate_rejection" and body["streamtune"]["version"] == "7"
    assert body["streamtune"]["challenger_new_bpb"] == 2.6 and body["streamtune"]["windows"] == ["w-01", "w-02"]
    (line,) = (tmp_path / "logs" / "alerts.jsonl").read_text().splitlines()
    logged = json.loads(line)
    assert logged["delivered"] is True and logged["text"] == body["text"]
    assert receiver.url not in line  # a webhook URL can hold a token: never logged


def test_a_failing_or_absent_webhook_is_logged_not_raised(tmp_path):
    failing = Receiver(status=500)
    try:
        delivery = send_alert(
            drift_alert("w-03", {"token_js": 0.2}, {"token_js": 0.001}, "r"),
            AlertsConfig(webhook_url=failing.url),
            tmp_path,
        )
    finally:
        failing.close()
    assert delivery.status == 500 and delivery.error == "HTTP 500"
    closed = send_alert(drift_alert("w-03", {}, {}, None), AlertsConfig(webhook_url=failing.url), tmp_path)
    assert closed.status is None and closed.error == "ConnectError"
    quiet = send_alert(drift_alert("w-04", {}, {}, None), AlertsConfig(), tmp_path)
    assert quiet.status is None and quiet.error is None
    lines = [json.loads(x) for x in (tmp_path / "logs" / "alerts.jsonl").read_text().splitlines()]
    assert [(x["delivered"], x.get("error")) for x in lines] == [
        (False, "HTTP 500"),
        (False, "ConnectError"),
        (False, None),
    ]


def test_record_text_cannot_enter_an_alert():
    with pytest.raises(ValueError, match="must be an identifier or a number"):
        Alert("drift", "x", {"window": SECRET})
    with pytest.raises(ValueError, match="must be an identifier or a number"):
        Alert("drift", "x", {"terms": ["ok", SECRET]})


def test_bad_alert_settings_name_the_table_and_key(tmp_path):
    with pytest.raises(SettingsError, match=r"\[alerts\] `webhook_url` must be an http"):
        tiny_home(tmp_path / "a", alerts={"webhook_url": "ftp://x"})
    with pytest.raises(SettingsError, match=r"\[alerts\] unknown key\(s\) \['webhook'\]"):
        tiny_home(tmp_path / "b", alerts={"webhook": "http://x"})


def _materialize(instance, asset: str, metadata: dict, partition: str | None = None) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=partition, metadata=metadata))


def test_gate_alert_sensor_alerts_on_rejection_pending_approval_and_drift_once(tmp_path, receiver):
    settings = tiny_home(tmp_path / "home", alerts={"webhook_url": receiver.url})
    sensor = build_gate_alert_sensor(settings)
    with dg.instance_for_test() as instance:
        gate = {"champion_new_bpb": 2.5, "challenger_new_bpb": 2.7, "new_rel_change": 0.08}
        _materialize(
            instance, "model_update", {"version": "5", "promoted": True, "windows": dg.MetadataValue.json(["w-01"])}
        )
        _materialize(
            instance,
            "model_update",
            {
                "version": "6",
                "promoted": False,
                "parent_version": "5",
                "windows": dg.MetadataValue.json(["w-02"]),
                "gate": dg.MetadataValue.json(gate),
            },
        )
        pending = {"champion_version": "5", "challenger_version": "7", "promoted": False, "pending_approval": "v7"}
        _materialize(instance, "champion_model", pending)
        drift = {"drift": True, "confirmed": dg.MetadataValue.json(["token_js"]), "token_js": 0.31, "token_js_p": 0.002}
        _materialize(
            instance, "window_profile", {**drift, "emerging_terms": dg.MetadataValue.md(SECRET)}, partition="w-03"
        )
        _materialize(instance, "window_profile", {"drift": False}, partition="w-04")
        result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=None))
        kinds = [b["streamtune"]["kind"] for b in receiver.bodies]
        assert kinds == ["gate_rejection", "approval_pending", "drift"]
        rejection, approval, drift_body = receiver.bodies
        assert rejection["streamtune"]["version"] == "6" and rejection["streamtune"]["challenger_new_bpb"] == 2.7
        assert "2.5 -> 2.7" in rejection["text"]
        assert approval["streamtune"]["version"] == "7" and "streamtune promote --version 7" in approval["text"]
        assert drift_body["streamtune"]["window"] == "w-03" and drift_body["streamtune"]["token_js_p"] == 0.002
        assert not any(SECRET.encode() in raw for raw in receiver.raw)
        again = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=result.cursor))
        assert len(receiver.bodies) == 3 and again.skip_message.startswith("no gate rejection")


@dg.asset
def leaky_asset():
    raise ValueError(f"could not parse record: {SECRET}")


def test_run_failure_alert_names_job_run_step_and_error_class_only(tmp_path, receiver):
    settings = tiny_home(tmp_path / "home", alerts={"webhook_url": receiver.url})
    sensor = build_run_failure_alert_sensor(settings)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [leaky_asset], instance=instance, raise_on_error=False, tags={"streamtune/window": "w-09"}
        )
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        (failure,) = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_alert",
            dagster_event=failure.dagster_event,
            dagster_instance=instance,
            dagster_run=run,
        ).for_run_failure()
        sensor(context)
    (body,) = receiver.bodies
    assert body["streamtune"]["kind"] == "run_failure" and body["streamtune"]["run_id"] == result.run_id
    assert body["streamtune"]["steps"] == ["leaky_asset"] and body["streamtune"]["error"] == "ValueError"
    assert body["streamtune"]["window"] == "w-09"
    assert SECRET.encode() not in receiver.raw[0] and "Secret" not in json.dumps(body)


@dg.asset(name="model_update")
def rejected_update():
    return {"promote": False}


@dg.asset_check(asset="model_update", blocking=True, name="challenger_beats_champion")
def failing_gate():
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR)


def test_a_run_failed_only_by_the_gate_is_left_to_the_gate_alert(tmp_path, receiver):
    settings = tiny_home(tmp_path / "home", alerts={"webhook_url": receiver.url})
    sensor = build_run_failure_alert_sensor(settings)
    with dg.instance_for_test() as instance:
        result = dg.materialize([rejected_update, failing_gate], instance=instance, raise_on_error=False)
        assert not result.success
        (failure,) = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_alert",
            dagster_event=failure.dagster_event,
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id),
        ).for_run_failure()
        skipped = sensor(context)
    assert isinstance(skipped, dg.SkipReason) and "failed by the promotion gate" in skipped.skip_message
    assert receiver.bodies == []
