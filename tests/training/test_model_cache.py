"""The local model cache (``ModelRegistry.local_copy``) verified against checksums recorded at registration,
and load errors that name the version and the file (issue 20 problem 5), against a real sqlite MLflow store."""

import json
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch

mlflow = pytest.importorskip("mlflow")

from training.model_files import CHECKSUMS_FILE, LOCAL_COPY_MARKER, ModelFileError, file_entry  # noqa: E402
from training.modeling import load_model  # noqa: E402
from training.tracking import ModelRegistry  # noqa: E402


def _registry(root: Path) -> ModelRegistry:
    return ModelRegistry(f"sqlite:///{root}/mlflow.db", f"file://{root}/mlartifacts")


def _with_train_state(base_dir: Path, out: Path) -> Path:
    """A copy of the base model with a (tiny) ``train_state.pt``, as a fine-tune leaves it."""
    shutil.copytree(base_dir, out)
    torch.save({"global_step": 3, "optimizer": {}}, out / "train_state.pt")
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory, base_dir):
    """v1 = the base (no train state), v2 = the same weights logged as an update with a train state."""
    root = tmp_path_factory.mktemp("cache-store")
    registry = _registry(root)
    registry.register_base(model_dir=base_dir, params={"source": "local"}, tags={"kind": "base"})
    registry.log_update(
        run_name="update",
        model_dir=_with_train_state(base_dir, root / "update"),
        params={},
        metrics={},
        curve=[],
        tags={"window": "0001"},
    )
    return registry


def _store_dir(registry: ModelRegistry, version: str) -> Path:
    """The version's artifact directory inside the file artifact store."""
    uri = registry.client.get_model_version_download_uri(registry.model_name, version)
    return Path(unquote(urlparse(uri).path))


def _logits(model_dir: Path) -> torch.Tensor:
    model, tokenizer = load_model(model_dir)
    x = torch.arange(16).reshape(2, 8) % len(tokenizer)
    with torch.no_grad():
        return model(x).logits


def test_checksums_are_recorded_next_to_the_model_files(store):
    manifest = json.loads((_store_dir(store, "2") / CHECKSUMS_FILE).read_text())["files"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "train_state.pt"} <= set(manifest)
    stored = _store_dir(store, "2")
    assert manifest["model.safetensors"] == file_entry(stored / "model" / "model.safetensors")
    train_state = store.client.get_run(store.version_run_id("2")).info.artifact_uri
    assert manifest["train_state.pt"] == file_entry(
        Path(unquote(urlparse(train_state).path)) / "train_state/train_state.pt"
    )


def test_a_truncated_cached_file_is_downloaded_again(store, tmp_path, base_dir):
    dest = store.local_copy("2", tmp_path / "registry" / "v2")
    weights = dest / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # e.g. a disk that filled up, or a crash of an older writer
    assert store.local_copy("2", dest) == dest
    assert weights.read_bytes() == good and (dest / LOCAL_COPY_MARKER).is_file()
    assert torch.equal(_logits(dest), _logits(base_dir))
    assert [p.name for p in dest.parent.iterdir()] == ["v2"]  # nothing stale left beside it


def test_a_cached_train_state_that_does_not_verify_is_downloaded_again(store, tmp_path):
    dest = store.local_copy("2", tmp_path / "v2")
    good = (dest / "train_state.pt").read_bytes()
    (dest / "train_state.pt").write_bytes(good[:-10])
    store.local_copy("2", dest)
    assert (dest / "train_state.pt").read_bytes() == good


def test_a_same_size_change_is_found_by_the_hash_of_a_copy_not_yet_hashed_in_this_process(store, tmp_path):
    first = store.local_copy("2", tmp_path / "a" / "v2")
    dest = tmp_path / "b" / "v2"  # a cache left by another process: marker and manifest, never hashed here
    shutil.copytree(first, dest)
    weights = bytearray((dest / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (dest / "model.safetensors").write_bytes(bytes(weights))
    store.local_copy("2", dest)
    assert (dest / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()


def test_an_old_cache_without_checksums_is_checked_structurally(store, tmp_path, base_dir):
    """The issue's case: a copy written by an older streamtune (marker, no manifest) holding truncated weights."""
    dest = tmp_path / "registry" / "v1"
    store.download_version("1", dest)
    (dest / CHECKSUMS_FILE).unlink(missing_ok=True)
    (dest / LOCAL_COPY_MARKER).write_text("streamtune-lm version 1\n")
    weights = dest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    store.local_copy("1", dest)
    assert torch.equal(_logits(dest), _logits(base_dir))


def test_a_damaged_registry_artifact_is_a_clear_error_naming_version_and_file(tmp_path, base_dir):
    registry = _registry(tmp_path / "store")
    registry.register_base(model_dir=base_dir, params={}, tags={})
    stored = _store_dir(registry, "1") / "model" / "model.safetensors"
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes: only the checksum can tell
    stored.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"version 1 of 'streamtune-lm': model\.safetensors does not match"):
        registry.local_copy("1", tmp_path / "registry" / "v1")
    assert list((tmp_path / "registry").iterdir()) == []  # nothing half-trusted left behind
    (_store_dir(registry, "1") / CHECKSUMS_FILE).unlink()  # a version logged before checksums existed
    stored.write_bytes(bytes(data[:1000]))
    with pytest.raises(ModelFileError, match=r"version 1 of 'streamtune-lm': model\.safetensors is damaged"):
        registry.local_copy("1", tmp_path / "registry" / "v1")


def test_load_errors_name_the_version_and_the_file(store, tmp_path):
    dest = store.local_copy("1", tmp_path / "registry" / "v1")
    weights = dest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match=r"streamtune-lm version 1 \(.*v1\).*model\.safetensors is damaged"):
        load_model(dest)
    plain = tmp_path / "plain"
    shutil.copytree(store.download_version("1", tmp_path / "dl"), plain)
    (plain / "tokenizer.json").write_text('{"truncated": ')
    with pytest.raises(ModelFileError, match=r"plain: tokenizer\.json is damaged"):
        load_model(plain)
