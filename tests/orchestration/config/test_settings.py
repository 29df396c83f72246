"""Settings load once into typed tables: unknown keys, wrong types and TOML errors name file, table and key."""

import pytest

from orchestration.cli.commands_loop import DEMO_SETTINGS
from orchestration.config.settings import LaunchConfig, SettingsError, SourcesConfig, load_settings, write_settings
from orchestration.sources.redis_stream import RedisStreamConfig
from orchestration.sources.sse import SseConfig
from quality.drift import DriftConfig
from quality.suite import QualityConfig
from training.config import GateConfig, ModelConfig, ReplayConfig, TrainConfig


def load_text(tmp_path, text):
    (tmp_path / "streamtune.toml").write_text(text)
    return load_settings(tmp_path)


def test_every_table_is_its_typed_dataclass_and_defaults_without_a_file(tmp_path):
    s = load_settings(tmp_path)
    expected = {
        "model": ModelConfig(),
        "train": TrainConfig(),
        "launch": LaunchConfig(),
        "gate": GateConfig(),
        "quality": QualityConfig(),
        "drift": DriftConfig(),
        "replay": ReplayConfig(),
        "sources": SourcesConfig(),
    }
    assert {name: getattr(s, name) for name in expected} == expected
    assert (s.launch.launcher, s.launch.nproc) == ("inprocess", 1) and s.sources.redis is None


def test_demo_settings_round_trip_through_write_and_load(tmp_path):
    write_settings(tmp_path, DEMO_SETTINGS)
    s = load_settings(tmp_path)
    assert s.model == ModelConfig(**DEMO_SETTINGS["model"])
    assert s.train == TrainConfig(**DEMO_SETTINGS["train"])
    assert s.gate == GateConfig(**DEMO_SETTINGS["gate"])
    assert s.drift == DriftConfig(**DEMO_SETTINGS["drift"])
    assert (s.max_windows_per_update, s.retention_rows, s.eval_fraction) == (1, 400, 0.1)


def test_nested_tables_lists_and_launch_keys_round_trip(tmp_path):
    values = {
        "train": {"epochs": 3, "launcher": "pipes", "nproc": 2},
        "quality": {"max_chars": 300, "pii_actions": {"EMAIL_ADDRESS": "quarantine"}},
        "sources": {
            "redis": {"url": "redis://127.0.0.1:6379/0", "stream": "events", "window_count": 4},
            "sse": {"url": "http://127.0.0.1:1/", "event_types": ["message", "edit"], "headers": {"X-Token": "t"}},
        },
    }
    write_settings(tmp_path, values)
    s = load_settings(tmp_path)
    assert (
        (s.launch.launcher, s.launch.nproc) == ("pipes", 2)
        and s.train.epochs == 3
        and "launcher" not in s.train.to_dict()
    )
    assert s.quality.pii_actions == {"EMAIL_ADDRESS": "quarantine"} and s.quality.max_chars == 300
    assert s.sources.redis == RedisStreamConfig(url="redis://127.0.0.1:6379/0", stream="events", window_count=4)
    assert s.sources.sse.event_types == ("message", "edit") and s.sources.sse.headers == {"X-Token": "t"}
    assert s.sources.sse == SseConfig.from_dict(values["sources"]["sse"])


def test_an_empty_source_table_is_no_source(tmp_path):
    assert load_text(tmp_path, "[sources.redis]\n").sources.redis is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nepoch = 3\n", r"\[train\] unknown key\(s\) \['epoch'\]; known: \[.*'batch_size'"),
        ('[train]\nepochs = "three"\n', r"\[train\] epochs: expected float, got 'three' \(str\)"),
        ("[train]\nmax_steps = 2.5\n", r"\[train\] max_steps: expected int \| None, got 2.5"),
        ("[train]\nbf16 = 1\n", r"\[train\] bf16: expected bool \| None, got 1"),
        ('[train]\nlauncher = "ray"\n', r"\[train\] launcher: expected one of \['inprocess', 'pipes'\]"),
        ("[train]\nnproc = 0\n", r"\[train\] nproc must be an int >= 1"),
        ("[gate]\nmin_improvement = 1.5\n", r"\[gate\] invalid GateConfig: `min_improvement`"),
        ('[quality]\nmax_chars = "300"\n', r"\[quality\] max_chars: expected int \| None, got '300'"),
        ('[sources.redis]\nurl = "redis://h"\n', r"\[sources.redis\] needs \['stream'\]"),
        ("[sources.kafka]\nurl = 1\n", r"\[sources\] unknown key\(s\) \['kafka'\]"),
        ('[sources.sse]\nurl = "u"\nevent_types = [1]\n', r"\[sources.sse\] event_types: expected str, got 1"),
        ('eval_fraction = "x"\n', r"streamtune.toml: eval_fraction: expected float, got 'x'"),
        ("unknown_knob = 3\n", r"unknown settings \['unknown_knob'\]"),
        ("model = 3\n", r"model must be a table"),
    ],
)
def test_bad_settings_are_a_settings_error_naming_file_table_and_key(tmp_path, text, message):
    with pytest.raises(SettingsError, match=message) as info:
        load_text(tmp_path, text)
    assert str(info.value).startswith(f"{tmp_path / 'streamtune.toml'}: ")
    assert isinstance(info.value, ValueError)


def test_toml_syntax_error_names_the_file(tmp_path):
    with pytest.raises(SettingsError, match=r"streamtune.toml: not valid TOML: .*line 1"):
        load_text(tmp_path, "[train\nepochs = 1\n")


def test_environment_overrides_the_file_and_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMTUNE_RETENTION_ROWS", "64")
    assert load_text(tmp_path, "retention_rows = 512\neval_fraction = 1\n").retention_rows == 64
    assert load_settings(tmp_path).eval_fraction == 1.0 and isinstance(load_settings(tmp_path).eval_fraction, float)
    monkeypatch.setenv("STREAMTUNE_RETENTION_ROWS", "many")
    with pytest.raises(SettingsError, match=r"STREAMTUNE_RETENTION_ROWS: cannot read 'many' as int"):
        load_settings(tmp_path)


def test_int_values_of_float_fields_are_kept_as_written(tmp_path):
    """MLflow params log the table as written (``epochs = 3`` stays 3, as before the typed loader)."""
    s = load_text(tmp_path, "[train]\nepochs = 3\n[drift]\ncooldown_s = 60\n")
    assert s.train.to_dict()["epochs"] == 3 and s.drift.cooldown_s == 60
