"""MLflow tracking and model registry for one model lineage: a run per update, a version per run.

Every update is one MLflow run (params, final metrics, the loss/lr curve as step metrics, tags) whose
model is logged with the ``transformers`` flavor and registered as a new version of one registered
model. Versions move between roles with aliases (``base``, ``champion``, ``challenger``) and carry the
gate's decision as tags; stages are deprecated since MLflow 2.9. The AdamW state of each update is a
run artifact (``train_state/train_state.pt``) so the next update can continue from it.

MLflow 3.17 notes (verified, see docs/research/mlflow_training.md):

- runs and the registry go through an explicit ``MlflowClient``; only ``mlflow.transformers.log_model``
  needs the fluent API, so the process-global tracking URI is set around that call and restored;
- the experiment gets an explicit artifact location, else a sqlite-backed experiment writes to
  ``./mlruns`` under the current directory;
- ``pip_requirements`` is passed explicitly (the defaults require torchvision and start a subprocess);
- versions are registered with the logged model's artifact location as source: with a ``models:/m-..``
  source the sqlite registry store resolves it through a default ``MlflowClient()``, which creates
  ``./mlflow.db`` in the current directory.

Set ``HF_HUB_OFFLINE=1`` when offline: ``log_model`` otherwise tries to fetch a Hub model card.

Run logging (params, metrics, dataset inputs, artifacts, system metrics) lives in ``training.mlflow_runs``
(``ExperimentRuns``, the base class); this module adds the registered model: versions, aliases, downloads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before mlflow is imported

import mlflow  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.models import Model  # noqa: E402

from training import adapters  # noqa: E402
from training.mlflow_runs import TRAIN_STATE_ARTIFACT, DatasetRef, ExperimentRuns, pip_requirements  # noqa: E402
from training.model_files import (  # noqa: E402
    CHECKSUMS_FILE,
    LOCAL_COPY_MARKER,
    ModelFileError,
    build_manifest,
    check_structure,
    file_entry,
    read_manifest,
    verify_manifest,
    write_manifest,
)

__all__ = [
    "CHECKSUMS_FILE",
    "LOCAL_COPY_MARKER",
    "TRAIN_STATE_ARTIFACT",
    "DatasetRef",
    "ModelFileError",
    "ModelRegistry",
    "pip_requirements",
]

log = logging.getLogger(__name__)

_hashed_copies: set[tuple[str, str]] = set()
"""``(resolved local copy, version)`` pairs fully hashed by this process: later reuses check sizes only."""


class ModelRegistry(ExperimentRuns):
    """One experiment and one registered model in an MLflow tracking/registry store.

    Args:
        tracking_uri: e.g. ``sqlite:////abs/mlflow.db`` or ``http://mlflow:5000`` (also the registry URI).
        artifact_location: artifact root for a newly created experiment, a URI (``file:///abs/mlartifacts``,
            ``s3://...``) or a local path (made absolute). Ignored (with a warning) if the experiment exists
            with another location.
        experiment: experiment name.
        model_name: registered model name.
    """

    def __init__(
        self,
        tracking_uri: str,
        artifact_location: str,
        experiment: str = "streamtune",
        model_name: str = "streamtune-lm",
    ) -> None:
        super().__init__(tracking_uri, artifact_location, experiment)
        self.model_name = model_name

    # runs that register a version ---------------------------------------------------------------------

    def log_update(
        self,
        *,
        run_name: str,
        model_dir: Path,
        params: dict,
        metrics: dict[str, float],
        curve: list[tuple[int, float, float]],
        tags: dict[str, str],
        artifacts: dict[str, Path] | None = None,
        description: str = "",
        run_id: str | None = None,
        datasets: list[DatasetRef] | None = None,
        aliases: tuple[str, ...] = ("challenger",),
        parent_version: str | None = None,
    ) -> tuple[str, str]:
        """Log one update as a run, register its model as a new version and give it ``aliases`` (``challenger``).

        The run gets ``params`` (values stringified), ``metrics`` (step 0; also attached to the logged
        model), ``curve`` as step metrics ``train_loss`` and ``lr``, ``tags`` and ``description``; the model
        in ``model_dir`` (``save_pretrained`` layout) logged with ``mlflow.transformers.log_model`` under
        ``name="model"``; ``model_dir/train_state.pt`` (if present) as ``train_state/train_state.pt``;
        each ``artifacts`` entry (file or directory) under its key as artifact directory; ``checksums.json``
        (size and SHA-256 of each stored model file and of the train state) next to the model files, which
        ``local_copy`` verifies against. The version gets ``tags`` and ``description``. The run ends
        FINISHED, or FAILED if anything raises.
        Takes ~1-2 s for a few-MB model on a local sqlite store.

        Args:
            run_id: log into this RUNNING run (from ``start_run``, e.g. one that recorded system metrics
                during training) instead of creating one.
            datasets: logged as the run's dataset inputs (name, digest, source, row count; no rows).
            aliases: set on the new version, in order.
            parent_version: the version fine-tuned (the champion; default: the ``streamtune.parent_version``
                tag, as ``orchestration.pipeline.update`` sets it); the evaluation metrics
                ``{champion,challenger}_{new,retention,first}_*`` are linked to the parent's and the new
                logged model and to their dataset (``ExperimentRuns.link_evaluations``).

        Returns:
            ``(run_id, version)``.
        """
        model_dir = Path(model_dir)
        if not ((model_dir / "config.json").is_file() or adapters.is_adapter_dir(model_dir)):
            raise FileNotFoundError(f"{model_dir} is not a save_pretrained model directory (no config.json)")
        str_tags = {str(k): str(v) for k, v in tags.items()}
        run_tags = dict(str_tags)
        if description:
            run_tags["mlflow.note.content"] = description
        if run_id is None:
            run_id = self.client.create_run(self.experiment_id(), run_name=run_name, tags=run_tags).info.run_id
        else:
            for key, value in run_tags.items():
                self.client.set_tag(run_id, key, value)
        try:
            self._log_run_data(
                run_id,
                model_dir=model_dir,
                params=params,
                metrics=metrics,
                curve=curve,
                artifacts=artifacts,
                datasets=datasets,
            )
            adapter = adapters.is_adapter_dir(model_dir)  # an adapter version: its files only, no flavor
            model_id = self._log_adapter(run_id, model_dir) if adapter else self._log_model(run_id, model_dir)
            self._log_checksums(model_id, model_dir)
            version = self._register(model_id, run_id, str_tags, description)
            parent_version = parent_version or str_tags.get("streamtune.parent_version")
            parent_id = self.model_id(parent_version) if parent_version else None
            self.link_evaluations(run_id, metrics, {"challenger": model_id, "champion": parent_id}, datasets)
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")
        for alias in aliases:
            self.set_alias(alias, version)
        return run_id, version

    def register_base(self, *, model_dir: Path, params: dict, tags: dict) -> tuple[str, str]:
        """Log the base model as run ``base-model`` and register it with aliases ``base`` and ``champion``.

        Registers a new version on every call: check ``version_for_alias("base")`` first.

        Returns:
            ``(run_id, version)``.
        """
        return self.log_update(
            run_name="base-model",
            model_dir=model_dir,
            params=params,
            metrics={},
            curve=[],
            tags=tags,
            description="base model of the lineage",
            aliases=("base", "champion"),
        )

    def _log_adapter(self, run_id: str, model_dir: Path) -> str:
        """Log an adapter version (``training.adapters``: adapter weights and config, tokenizer,
        ``adapter_base.json``; not ``train_state.pt`` or dot files) as a logged model without a flavor."""
        model_id = self.client.create_logged_model(
            self.experiment_id(), name="model", source_run_id=run_id, model_type="peft-adapter"
        ).model_id
        with tempfile.TemporaryDirectory(prefix="streamtune-adapter-") as tmp:
            for item in Path(model_dir).iterdir():
                if item.is_file() and not item.name.startswith(".") and item.name != "train_state.pt":
                    shutil.copy2(item, Path(tmp) / item.name)
            self.client.log_model_artifacts(model_id, tmp)
        self.client.finalize_logged_model(model_id, "READY")
        return model_id

    def _log_checksums(self, model_id: str, model_dir: Path) -> None:
        """Log ``checksums.json`` into the logged model's artifacts: size and SHA-256 of each file
        ``download_version`` copies, hashed from a fresh download of what the store holds (the flavor
        re-saves the model, so ``model_dir``'s bytes may differ), plus ``train_state.pt`` (uploaded as is)."""
        source = self.client.get_logged_model(model_id).artifact_location
        with tempfile.TemporaryDirectory(prefix="streamtune-checksums-") as tmp:
            files_dir = Path(tmp) / "files"
            self._download_model_files(source, files_dir, f"logged model {model_id}")
            files = build_manifest(files_dir)
            if (model_dir / "train_state.pt").is_file():
                files["train_state.pt"] = file_entry(model_dir / "train_state.pt")
            manifest_dir = Path(tmp) / "manifest"
            manifest_dir.mkdir()
            self.client.log_model_artifact(model_id, str(write_manifest(manifest_dir, files)))

    # registry ----------------------------------------------------------------------------------------

    def _ensure_registered_model(self) -> None:
        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            try:
                self.client.create_registered_model(self.model_name)
            except MlflowException as e2:  # created concurrently
                if e2.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise

    def _register(self, model_id: str, run_id: str, tags: dict[str, str], description: str) -> str:
        self._ensure_registered_model()
        source = self.client.get_logged_model(model_id).artifact_location
        mv = self.client.create_model_version(
            self.model_name,
            source=source,
            run_id=run_id,
            tags=tags,
            description=description or None,
            model_id=model_id,
        )
        return str(mv.version)

    def model_id(self, version: str) -> str | None:
        """The MLflow 3 logged-model id of a registered version (None for a version without one): the
        version's ``model_id``, which the sqlite registry store does not keep, else its run's model output."""
        mv = self.client.get_model_version(self.model_name, str(version))
        if mv.model_id:
            return mv.model_id
        outputs = self.client.get_run(mv.run_id).outputs if mv.run_id else None
        ids = [o.model_id for o in (outputs.model_outputs if outputs else [])]
        return ids[-1] if ids else None

    def version_for_alias(self, alias: str) -> str | None:
        """Version number holding ``alias``, or None if the alias or the registered model does not exist."""
        try:
            registered = self.client.get_registered_model(self.model_name)
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        version = registered.aliases.get(alias)
        return None if version is None else str(version)

    def set_alias(self, alias: str, version: str) -> None:
        """Point ``alias`` at ``version`` (atomic; moves it if it was elsewhere)."""
        self.client.set_registered_model_alias(self.model_name, alias, str(version))

    def tag_version(self, version: str, tags: dict[str, str]) -> None:
        """Set tags on a model version (values stringified)."""
        for key, value in tags.items():
            self.client.set_model_version_tag(self.model_name, str(version), str(key), str(value))

    def rollback_champion(self, to_version: str, reason: str, actor: str = "") -> str | None:
        """Move the ``champion`` alias back to ``to_version`` and record why on both versions.

        Tags on ``to_version``: ``rollback.restored_from`` (the replaced champion), ``rollback.reason``,
        ``rollback.at`` (UTC ISO-8601), ``rollback.actor``; on the replaced champion:
        ``rollback.rolled_back_to``, ``rollback.reason``, ``rollback.at``.

        Returns:
            The version that was champion before (None if there was none).

        Raises:
            ValueError: if ``to_version`` does not exist or already is the champion.
        """
        try:
            self.client.get_model_version(self.model_name, str(to_version))
        except MlflowException as e:
            raise ValueError(f"model version {to_version} of {self.model_name!r} does not exist") from e
        previous = self.version_for_alias("champion")
        if previous == str(to_version):
            raise ValueError(f"version {to_version} already is the champion")
        at = datetime.now(UTC).isoformat(timespec="seconds")
        self.set_alias("champion", str(to_version))
        self.tag_version(
            str(to_version),
            {
                "rollback.restored_from": previous or "",
                "rollback.reason": reason,
                "rollback.at": at,
                "rollback.actor": actor,
            },
        )
        if previous is not None:
            self.tag_version(
                previous, {"rollback.rolled_back_to": str(to_version), "rollback.reason": reason, "rollback.at": at}
            )
        return previous

    def version_tags(self, version: str) -> dict[str, str]:
        """Tags of a model version."""
        return dict(self.client.get_model_version(self.model_name, str(version)).tags)

    def version_run_id(self, version: str) -> str | None:
        """Id of the run that produced ``version``."""
        return self.client.get_model_version(self.model_name, str(version)).run_id or None

    def download_version(self, version: str, dst: Path) -> Path:
        """Materialise ``version`` as a ``save_pretrained`` directory that ``load_model`` reads.

        Copies the transformers flavor's weight directory (``config.json``, ``model.safetensors``, ...)
        and its tokenizer component byte for byte into ``dst``, so logits are identical to the logged model,
        and the version's ``checksums.json`` when it has one (versions logged before manifests have none).
        Nothing is verified here: ``local_copy`` verifies.

        Returns:
            ``dst`` (created if missing; existing files of the same names are overwritten).

        Raises:
            MlflowException: if the version does not exist.
            FileNotFoundError: if the version is not a transformers-flavor model with a tokenizer.
        """
        source = self.client.get_model_version_download_uri(self.model_name, str(version))
        return self._download_model_files(source, Path(dst), f"version {version} of {self.model_name!r}")

    def _download_model_files(self, source: str, dst: Path, label: str) -> Path:
        """Copy the weight files, tokenizer files and ``checksums.json`` of the transformers model at
        artifact URI ``source`` flat into ``dst`` (see ``download_version``); ``label`` names it in errors."""
        dst.mkdir(parents=True, exist_ok=True)
        staging = dst / ".mlflow-download"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=source, dst_path=str(staging), tracking_uri=self.tracking_uri
                )
            )
            if (local / adapters.ADAPTER_CONFIG_FILE).is_file():  # an adapter version (``_log_adapter``): files, flat
                for item in (p for p in local.iterdir() if p.is_file()):
                    shutil.copy2(item, dst / item.name)
                return dst
            flavor = Model.load(str(local / "MLmodel")).flavors.get("transformers")
            if flavor is None or "tokenizer" not in flavor.get("components", []):
                raise FileNotFoundError(f"{label} is not a transformers model with a tokenizer")
            for sub in (local / flavor.get("model_binary", "model"), local / "components" / "tokenizer"):
                for item in sub.iterdir():
                    if item.is_file():
                        shutil.copy2(item, dst / item.name)
            if (local / CHECKSUMS_FILE).is_file():
                shutil.copy2(local / CHECKSUMS_FILE, dst / CHECKSUMS_FILE)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return dst

    def download_train_state(self, version: str, dst: Path) -> Path | None:
        """Download the optimizer state logged with ``version``'s run to ``dst/train_state.pt``.

        ``download_version(v, d)`` followed by ``download_train_state(v, d)`` gives a parent directory from
        which ``finetune`` carries the AdamW state over.

        Returns:
            The local file, or None if the run has no ``train_state/train_state.pt`` (e.g. the base model).
        """
        run_id = self.version_run_id(version)
        if run_id is None:
            return None
        available = {a.path for a in self.client.list_artifacts(run_id, "train_state")}
        if TRAIN_STATE_ARTIFACT not in available:
            return None
        dst = Path(dst)
        dst.mkdir(parents=True, exist_ok=True)
        staging = dst / ".mlflow-download"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=TRAIN_STATE_ARTIFACT,
                dst_path=str(staging),
                tracking_uri=self.tracking_uri,
            )
            target = dst / "train_state.pt"
            shutil.move(local, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def local_copy(self, version: str, dest: Path) -> Path:
        """A complete, verified local copy of ``version`` at ``dest``: its ``save_pretrained`` files
        (``download_version``, with ``checksums.json``) plus the run's ``train_state.pt`` when it logged one
        (``download_train_state``), ready to be a ``finetune`` parent or a drift scorer.

        The files are downloaded into a temporary sibling directory (``.<dest name>-*``) and verified against
        the version's checksums (size and SHA-256 of every file); then the marker ``LOCAL_COPY_MARKER`` is
        written and the directory renamed to ``dest`` (atomic on one filesystem): readers never see a
        half-written or unverified copy, and a failed download leaves no ``dest``. A ``dest`` holding the
        marker is reused without contacting the store once it verifies (sizes on every call, SHA-256 once per
        process); one that does not verify, or has no marker, is replaced. Versions logged before checksums
        were recorded get ``check_structure`` instead (safetensors headers, JSON, zip archives), with a log
        line saying so. Concurrent callers are safe: the first rename wins.

        Returns:
            ``dest``.

        Raises:
            MlflowException: if the version does not exist.
            FileNotFoundError: if the version is not a transformers-flavor model with a tokenizer.
            ModelFileError: if the downloaded files do not verify (the registry's copy is damaged); the
                message names the version and the file.
        """
        dest = Path(dest)
        label = f"version {version} of {self.model_name!r}"
        if (dest / LOCAL_COPY_MARKER).is_file():
            try:
                _verify_copy(dest, version, label)
                return dest
            except ModelFileError as e:
                log.warning("local copy %s does not verify, downloading it again: %s", dest, e)
                _discard_incomplete(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
        try:
            self.download_version(version, tmp)
            self.download_train_state(version, tmp)
            try:
                _verify_copy(tmp, version, label, fresh=True)
            except ModelFileError as e:
                raise ModelFileError(
                    f"{e}; the registry's copy is damaged: restore the artifact, or roll the champion back to "
                    "another version (`streamtune rollback`)"
                ) from e
            if adapters.is_adapter_dir(tmp):  # an adapter version: its base version is copied beside it, and linked
                base = adapters.read_base_ref(tmp).get("base_version") or ""
                if not base:
                    raise ModelFileError(f"{label}: {adapters.ADAPTER_BASE_FILE} names no base version")
                adapters.write_base_link(tmp, self.local_copy(base, dest.parent / f"v{base}"))
            (tmp / LOCAL_COPY_MARKER).write_text(f"{self.model_name} version {version}\n")
            if dest.exists() and not (dest / LOCAL_COPY_MARKER).is_file():
                _discard_incomplete(dest)
            try:
                tmp.rename(dest)
                _hashed_copies.add((str(dest.resolve()), str(version)))
            except OSError:  # another process renamed its copy into place first
                if not (dest / LOCAL_COPY_MARKER).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest


def _verify_copy(directory: Path, version: str, label: str, *, fresh: bool = False) -> None:
    """Verify a local copy against its ``checksums.json``: every file's size, and its SHA-256 when ``fresh``
    (just downloaded) or not yet hashed by this process; without a manifest, ``check_structure``.

    Raises:
        ModelFileError: naming ``label`` (the version) and the first file that does not verify.
    """
    files = read_manifest(directory, label)
    key = (str(directory.resolve()), str(version))
    if files is None:
        if fresh or key not in _hashed_copies:
            log.info(
                "%s has no recorded checksums (logged before streamtune recorded them): file structure only", label
            )
        check_structure(directory, label)
    else:
        verify_manifest(directory, files, label, full=fresh or key not in _hashed_copies)
    if not fresh:  # a fresh download sits in a temporary directory; local_copy records dest after the rename
        _hashed_copies.add(key)


def _discard_incomplete(dest: Path) -> None:
    """Move an unmarked or unverified ``dest`` aside (one rename) and delete it, so a complete copy can take
    its name."""
    trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}-stale-", dir=dest.parent))
    with contextlib.suppress(FileNotFoundError):  # another process moved it already
        dest.rename(trash / dest.name)
    shutil.rmtree(trash, ignore_errors=True)
