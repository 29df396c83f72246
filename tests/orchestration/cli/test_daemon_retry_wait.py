"""``Daemon.wait_until_idle`` must not call the loop idle between a crashed run and its retry."""

from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import PARENT_RUN_ID_TAG, WILL_RETRY_TAG
from dagster._core.test_utils import instance_for_test

from orchestration.cli.daemon import _retries_pending


def _add(instance: DagsterInstance, status: DagsterRunStatus, tags: dict[str, str]) -> DagsterRun:
    return instance.add_run(DagsterRun(job_name="finetune", status=status, tags=tags))


def test_a_failed_run_that_will_retry_counts_as_active_until_its_retry_exists(tmp_path):
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        _add(instance, DagsterRunStatus.FAILURE, {WILL_RETRY_TAG: "false"})  # gave up: not pending
        crashed = _add(instance, DagsterRunStatus.FAILURE, {WILL_RETRY_TAG: "true"})
        assert _retries_pending(instance) == 1
        _add(instance, DagsterRunStatus.STARTED, {PARENT_RUN_ID_TAG: crashed.run_id})  # the retry was launched
        assert _retries_pending(instance) == 0
