"""Run workers forked from a warm fork server (issue 18): ``orchestration.run_workers``."""

import multiprocessing

import pytest
from dagster._grpc.server import DagsterApiServer

from orchestration import run_workers


def test_forkserver_hooks_dagster_code_servers(monkeypatch):
    monkeypatch.setattr(DagsterApiServer, "_mp_ctx", None, raising=False)  # removed again after the test
    monkeypatch.setattr(run_workers, "_installed", None)
    assert run_workers.install("forkserver") == "forkserver"
    hook = DagsterApiServer.__dict__["_mp_ctx"]
    assert isinstance(hook, property)  # wins over the spawn context DagsterApiServer.__init__ sets
    context = hook.fget(object())
    assert context.get_start_method() == "forkserver"
    assert multiprocessing.forkserver._forkserver._preload_modules == list(run_workers.PRELOAD)
    assert run_workers.install("forkserver") == "forkserver"  # idempotent


def test_every_preloaded_module_imports():
    import importlib

    for name in run_workers.PRELOAD:  # the fork server skips an ImportError silently: catch it here
        importlib.import_module(name)


def test_spawn_leaves_dagster_alone_and_an_unknown_method_is_refused(tmp_path):
    before = DagsterApiServer.__dict__.get("_mp_ctx")
    assert run_workers.install("spawn") == "spawn"
    assert DagsterApiServer.__dict__.get("_mp_ctx") is before  # nothing changed
    with pytest.raises(ValueError, match="forkserver' or 'spawn'"):
        run_workers.install("fork")


def test_run_workers_is_a_validated_setting(tmp_path):
    from orchestration.config.settings import load_settings, write_settings
    from orchestration.config.tables import SettingsError

    write_settings(tmp_path, {"run_workers": "spawn"})
    assert load_settings(tmp_path).run_workers == "spawn"
    assert load_settings(tmp_path / "fresh").run_workers == "forkserver"
    write_settings(tmp_path, {"run_workers": "thread"})
    with pytest.raises(SettingsError, match="run_workers"):
        load_settings(tmp_path)
