"""Runs the CLI queues on a home's Dagster instance outside the daemon's sensors: the ``finetune`` runs
that retrain windows after a deletion request (``streamtune forget``, step 6 of
``orchestration.pipeline.forget``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from orchestration.cli.daemon import instance_env, open_instance, prepare_instance
from orchestration.config.settings import Settings


def submit_finetune_runs(settings: Settings, n_runs: int, tags: dict[str, str]) -> list[str]:
    """Queue ``n_runs`` runs of the ``finetune`` job on the home's Dagster instance with ``tags``, through
    ``dagster job launch`` (the QueuedRunCoordinator queues them; the daemon launches them, one at a time
    by the ``streamtune/pipeline=finetune`` tag limit). Returns the run ids.

    Raises:
        RuntimeError: the launch command failed (its output in the message), or a submitted run is not in
            the instance.
    """
    prepare_instance(settings)
    exe = shutil.which("dagster", path=str(Path(sys.executable).parent)) or shutil.which("dagster")
    if exe is None:
        raise RuntimeError("the dagster command is not installed in this environment")
    run_ids = []
    for _ in range(n_runs):
        run_id = str(uuid.uuid4())
        proc = subprocess.run(
            [
                exe,
                "job",
                "launch",
                "-m",
                "orchestration.definitions",
                "-j",
                "finetune",
                "--run-id",
                run_id,
                "--tags",
                json.dumps(tags),
            ],
            env=instance_env(settings),
            cwd=str(settings.home),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"dagster job launch failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}")
        run_ids.append(run_id)
    with open_instance(settings) as instance:
        missing = [r for r in run_ids if instance.get_run_by_id(r) is None]
    if missing:
        raise RuntimeError(f"submitted runs not found in the instance: {missing}")
    return run_ids
