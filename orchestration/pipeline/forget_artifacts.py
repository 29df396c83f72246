"""Step 4 of a deletion request, the model side: delete the files of the model versions that saw the records.

``orchestration.pipeline.forget`` calls these after the warehouse transaction. The registry entries stay
(version number, metrics, params and the tags that record the deletion: the audit trail); what goes:

- **retired versions** (trained on the records, or fine-tuned from one): the logged model's files (weights,
  tokenizer, ``MLmodel``) and every artifact of the version's MLflow run (optimizer state
  ``train_state/``, sample generations ``samples/``, snapshot manifest ``snapshot/``), through MLflow's own
  artifact repositories (local folder, ``mlflow-artifacts:`` proxy, S3, ...), so a remote store is covered
  too; a later download of such a version fails instead of bringing the weights back;
- **versions only evaluated on the records**: their ``samples/`` artifact (the prompts are held-out rows'
  first words); their weights never saw the rows and stay;
- **local copies**: ``<models>/registry/v<N>`` of retired versions and the fine-tune work directories
  ``<models>/updates/<snapshot id>-from-v<parent>`` of a scrubbed snapshot or a retired parent
  (checkpoints, half-finished models, generations of a killed run).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

SAMPLES_ARTIFACT = "samples"
"""Run-relative artifact directory of the sample generations (``orchestration.pipeline.update``)."""


@dataclass
class ArtifactDeletion:
    """What ``delete_version_artifacts`` removed (artifact URIs) and what it could not (one line each)."""

    deleted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def delete_version_artifacts(registry, retired: list[str], evaluated: list[str]) -> ArtifactDeletion:
    """Delete the artifacts of ``retired`` versions (logged model and run) and the ``samples/`` artifact of
    ``evaluated`` ones, keeping the registry entries; a version that does not exist is skipped.

    Args:
        registry: a ``training.tracking.ModelRegistry`` (its ``client``, ``model_name``, ``tracking_uri``).
        retired: version numbers whose weights descend from the deleted records.
        evaluated: version numbers only evaluated on them.

    Returns: the deleted artifact URIs and, per failure (a store that cannot delete, a network error), one
        line naming the version and the URI; failures do not stop the other deletions.
    """
    out = ArtifactDeletion()
    for version in retired:
        for uri in _version_uris(registry, version, out):
            _delete(registry, uri, None, version, out)
    for version in evaluated:
        run_uri = _version_uris(registry, version, out, model=False)
        for uri in run_uri:
            _delete(registry, uri, SAMPLES_ARTIFACT, version, out)
    return out


def remove_local_models(models: Path, retired: set[str], snapshot_ids: set[str]) -> list[str]:
    """Delete ``models/registry/v<N>`` of each retired N, and every ``models/updates/<snapshot id>-from-v<P>``
    whose snapshot id is in ``snapshot_ids`` or whose parent P is retired.

    Returns: the removed directories, relative to ``models`` (``registry/v3``, ``updates/<name>``).
    """
    dirs = [models / "registry" / f"v{v}" for v in sorted(retired)]
    updates = models / "updates"
    if updates.is_dir():
        for d in sorted(updates.iterdir()):
            stem, sep, parent = d.name.rpartition("-from-v")
            if d.is_dir() and sep and (stem in snapshot_ids or parent in retired):
                dirs.append(d)
    removed = []
    for d in dirs:
        if d.is_dir():
            shutil.rmtree(d)
            removed.append(str(d.relative_to(models)))
    return removed


def _version_uris(registry, version: str, out: ArtifactDeletion, *, model: bool = True) -> list[str]:
    """Artifact URIs of a version: its logged model's location (``model``) and its run's artifact root."""
    # lazy: mlflow is imported only when a request touches the registry (CLI start-up time)
    from mlflow.exceptions import MlflowException

    client = registry.client
    try:
        mv = client.get_model_version(registry.model_name, str(version))
        uris = []
        if model:
            model_id = getattr(mv, "model_id", None)
            uris.append(client.get_logged_model(model_id).artifact_location if model_id else mv.source)
        if mv.run_id:
            uris.append(client.get_run(mv.run_id).info.artifact_uri)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        out.errors.append(f"version {version}: cannot find its artifacts: {e.message.splitlines()[0]}")
        return []
    return [u for u in uris if u and not u.startswith(("models:", "runs:"))]


def _delete(registry, uri: str, path: str | None, version: str, out: ArtifactDeletion) -> None:
    # lazy: mlflow is imported only when a request touches the registry (CLI start-up time)
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    target = uri.rstrip("/") + (f"/{path}" if path else "")
    try:
        repo = get_artifact_repository(uri, tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)
        if path is not None and not any(f.path == path for f in repo.list_artifacts()):
            return
        repo.delete_artifacts(path)
    except Exception as e:  # noqa: BLE001 - any store error is reported per artifact; the others still go
        line = str(e).splitlines()[0] if str(e) else type(e).__name__
        out.errors.append(f"version {version}: could not delete {target}: {line}")
        log.warning("forget: version %s: could not delete %s: %s", version, target, line)
        return
    out.deleted.append(target)
