"""ModelRegistry against a real sqlite MLflow store in a temporary directory."""

import os
from pathlib import Path

import pytest
import torch

mlflow = pytest.importorskip("mlflow")

from training.modeling import load_model  # noqa: E402
from training.tokenizer import tokenizer_sha256  # noqa: E402
from training.tracking import ModelRegistry  # noqa: E402


@pytest.fixture(scope="module")
def flow(tmp_path_factory, base_dir, corpus):
    """Register the base, fine-tune v2 from it, log v2 as an update; cwd is an empty dir throughout."""
    from training.config import TrainConfig
    from training.finetune import FinetuneRequest, finetune

    root = tmp_path_factory.mktemp("mlflow")
    cwd = root / "cwd"
    cwd.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        uri_before, env_before = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
        registry = ModelRegistry(f"sqlite:///{root}/mlflow.db", f"file://{root}/mlartifacts")
        assert registry.version_for_alias("champion") is None
        base_run, base_version = registry.register_base(
            model_dir=base_dir, params={"source": "local", "n_layer": 1}, tags={"kind": "base"}
        )
        cfg = TrainConfig(seq_len=32, batch_size=8, max_steps=3, bf16=False, threads=1, log_every=1)
        result = finetune(
            FinetuneRequest(
                parent=base_dir, train_texts=corpus[:40], new_eval_texts=corpus[40:50], cfg=cfg, out_dir=root / "v2"
            )
        )
        run_id, version = registry.log_update(
            run_name="window-0001",
            model_dir=result.output_dir,
            params=cfg.to_dict(),
            metrics=result.metrics(),
            curve=result.fit.curve,
            tags={"window": "0001", "parent_version": base_version},
            artifacts={"notes": _write(root / "notes.txt", "hello")},
            description="update on window 0001",
        )
        yield {
            "registry": registry,
            "root": root,
            "cwd": cwd,
            "base": (base_run, base_version),
            "update": (run_id, version),
            "result": result,
            "tracking_before": (uri_before, env_before),
        }


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_register_base_sets_base_and_champion(flow):
    registry, (_, base_version) = flow["registry"], flow["base"]
    assert base_version == "1"
    assert registry.version_for_alias("base") == "1"
    assert registry.version_for_alias("champion") == "1"
    assert registry.version_tags("1") == {"kind": "base"}
    assert registry.client.get_run(flow["base"][0]).info.run_name == "base-model"


def test_log_update_registers_a_challenger_version_with_run_data(flow):
    registry, (run_id, version) = flow["registry"], flow["update"]
    assert version == "2"
    assert registry.version_for_alias("challenger") == "2"
    assert registry.version_for_alias("champion") == "1"
    run = registry.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "window-0001"
    assert run.data.params["seq_len"] == "32" and run.data.params["bf16"] == "False"
    assert run.data.metrics["challenger_new_bpb"] == pytest.approx(flow["result"].challenger_new.bits_per_byte)
    assert run.data.tags["window"] == "0001"
    assert run.data.tags["mlflow.note.content"] == "update on window 0001"
    history = registry.client.get_metric_history(run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx([loss for _, loss, _ in flow["result"].fit.curve])
    artifacts = {a.path for a in registry.client.list_artifacts(run_id)}
    assert {"train_state", "notes"} <= artifacts
    mv = registry.client.get_model_version(registry.model_name, "2")
    assert mv.run_id == run_id and mv.description == "update on window 0001"
    assert mv.source.startswith(f"file://{flow['root']}/mlartifacts/")


def test_download_version_gives_identical_model(flow, tmp_path):
    registry = flow["registry"]
    local = registry.download_version("2", tmp_path / "v2")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in local.iterdir()}
    assert not (local / ".mlflow-download").exists()
    (m_ref, t_ref), (m_dl, t_dl) = load_model(flow["result"].output_dir), load_model(local)
    x = torch.randint(0, len(t_ref), (2, 16))
    with torch.no_grad():
        assert torch.equal(m_ref(x).logits, m_dl(x).logits)
    assert tokenizer_sha256(t_ref) == tokenizer_sha256(t_dl)


def test_train_state_round_trip(flow, tmp_path):
    registry = flow["registry"]
    path = registry.download_train_state("2", tmp_path / "v2")
    assert path == tmp_path / "v2" / "train_state.pt"
    assert path.read_bytes() == (flow["result"].output_dir / "train_state.pt").read_bytes()
    assert registry.download_train_state("1", tmp_path / "base") is None


def test_tags_and_aliases_round_trip(flow):
    registry = flow["registry"]
    registry.tag_version("2", {"gate.decision": "promoted", "gate.new_rel_change": -0.1})
    tags = registry.version_tags("2")
    assert tags["gate.decision"] == "promoted" and tags["gate.new_rel_change"] == "-0.1"
    assert tags["window"] == "0001"
    registry.set_alias("champion", "2")
    assert registry.version_for_alias("champion") == "2"
    registry.set_alias("champion", "1")  # rollback is moving the alias back
    assert registry.version_for_alias("champion") == "1"


def test_log_artifact_file_and_unknown_model_name(flow):
    registry = flow["registry"]
    run_id = flow["update"][0]
    registry.log_artifact_file(run_id, _write(flow["root"] / "extra.json", "{}"), "reports")
    assert "reports/extra.json" in {a.path for a in registry.client.list_artifacts(run_id, "reports")}
    other = ModelRegistry(registry.tracking_uri, registry.artifact_location, model_name="no-such-model")
    assert other.version_for_alias("champion") is None


def test_nothing_is_written_outside_the_temporary_tree(flow):
    assert os.listdir(flow["cwd"]) == []
    assert {p.name for p in flow["root"].iterdir()} >= {"mlflow.db", "mlartifacts"}
    assert (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")) == flow["tracking_before"]


def test_local_copy_holds_model_train_state_and_marker_and_nothing_beside_it(flow, tmp_path):
    from training.tracking import LOCAL_COPY_MARKER

    registry = flow["registry"]
    dest = registry.local_copy("2", tmp_path / "registry" / "v2")
    assert dest == tmp_path / "registry" / "v2"
    assert {"config.json", "model.safetensors", "tokenizer.json", "train_state.pt", LOCAL_COPY_MARKER} <= {
        p.name for p in dest.iterdir()
    }
    assert (dest / "train_state.pt").read_bytes() == (flow["result"].output_dir / "train_state.pt").read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["v2"]  # the temporary sibling was renamed away
    base = registry.local_copy("1", tmp_path / "registry" / "v1")  # the base run logged no train state
    assert (base / "config.json").is_file() and not (base / "train_state.pt").exists()


def test_local_copy_reuses_a_complete_copy_without_the_store(flow, tmp_path, monkeypatch):
    registry = flow["registry"]
    dest = registry.local_copy("2", tmp_path / "v2")
    monkeypatch.setattr(registry, "download_version", lambda *a: pytest.fail("a complete copy was downloaded again"))
    assert registry.local_copy("2", dest) == dest


def test_local_copy_failing_mid_download_leaves_no_dest(flow, tmp_path, monkeypatch):
    registry = flow["registry"]

    def broken(version, dst):
        raise OSError("connection reset")

    monkeypatch.setattr(registry, "download_train_state", broken)  # after the model files are down
    with pytest.raises(OSError, match="connection reset"):
        registry.local_copy("2", tmp_path / "registry" / "v2")
    assert list((tmp_path / "registry").iterdir()) == []


def test_local_copy_replaces_an_incomplete_copy(flow, tmp_path):
    from training.tracking import LOCAL_COPY_MARKER

    registry = flow["registry"]
    dest = tmp_path / "v2"
    registry.download_version("2", dest)  # an older copy: model files, no train state, no marker
    dest = registry.local_copy("2", dest)
    assert (dest / LOCAL_COPY_MARKER).is_file() and (dest / "train_state.pt").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["v2"]
