"""Run workers forked from a warm process: the code server starts each run from a ``forkserver`` that has
already imported the code location and the libraries its steps use.

Dagster's code server (``dagster api grpc``, started by ``dagster-daemon`` / ``dagster dev``) starts every run
of the ``DefaultRunLauncher`` in a fresh ``multiprocessing`` *spawn* child (``DagsterApiServer._mp_ctx``,
hard-coded in ``dagster._grpc.server``): a new interpreter that imports Dagster, ``orchestration.definitions``
and then, inside the steps, Great Expectations (ingest) or torch/transformers/MLflow (fine-tune). On the 2-core
machine that is 3-4 s of an ingest run and about 5 s of a fine-tune (issue 18's profile). With
``run_workers = "forkserver"`` (the default) the code server uses Python's ``forkserver`` start method
instead, with ``PRELOAD`` imported once in the fork server (``multiprocessing.set_forkserver_preload``):
each run worker is a ``fork()`` of that warm, single-threaded process and starts with everything imported.

Each code server starts its fork server at once, in a background thread, so that the imports (about 12
CPU-seconds) overlap the wait for the first run instead of delaying it. The loop (``streamtune run`` / ``demo``,
``orchestration.cli.daemon.Daemon``) keeps one code server for its whole life (``orchestration.cli.code_server``),
so this happens once; ``dagster dev`` (``streamtune ui``) replaces its code server every 60 s
(``dagster._daemon.controller.RELOAD_WORKSPACE_INTERVAL``) and pays it each time.

Measured on the 12-window demo stream (``bench/freshness.py``, 2 idle cores): an ingest run 4.5 s from launch
to success against 14.4 s spawned, fine-tune overhead 4.5 s against 14.2 s, and a backlog of queued runs
(fine-tunes queued 171 s, median) that the spawned workers could not clear at one window a minute.

Everything else is Dagster's own: the run worker runs ``start_run_in_subprocess`` as with spawn, reports
through the same queue, is watched by the same ``is_alive`` check, cancelled through the same termination
event, and run monitoring frees the pool slots of a killed one. Preloading only imports modules: no model,
no CUDA context and no thread pool exists in the fork server (CUDA would not survive a fork).

The hook is one attribute of a private class, so it is guarded: ``install`` checks that the Dagster it runs
under still sets ``_mp_ctx`` and leaves the spawn method in place (and says why) when it does not;
``run_workers = "spawn"`` in ``streamtune.toml`` leaves Dagster alone.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.forkserver
import sys
import threading

PRELOAD = (
    "orchestration.definitions",  # Dagster, the assets, checks, resources and store
    "orchestration.pipeline.curate",  # the gates: polars, the PII prefilter, the GX suite (GX itself is lazy)
    "great_expectations",
    "great_expectations.expectations",
    "great_expectations.core.run_identifier",
    "great_expectations.data_context.types.base",
    "orchestration.pipeline.update",  # the fine-tune: torch, transformers, MLflow
    "training.finetune",
    "training.tracking",
    "training.evaluate",
    "training.modeling",
    "orchestration.run_worker_preload",  # the PII engine built, matplotlib's pyplot (Agg): not only imports
)
"""Modules the fork server imports once (a missing optional one is skipped by ``multiprocessing``)."""

log = logging.getLogger(__name__)
_installed: str | None = None


def install(method: str = "forkserver") -> str:
    """Make this process's Dagster code servers start run workers with ``method``.

    Args:
        method: "forkserver" (fork from a process that preloaded ``PRELOAD``) or "spawn" (Dagster's default;
            nothing is changed).

    Returns:
        The start method in effect: ``method``, or "spawn" when this Dagster has no ``DagsterApiServer._mp_ctx``
        (then a warning is logged) or the platform has no fork server (Windows).

    Raises:
        ValueError: ``method`` is neither.
    """
    global _installed
    if method not in ("forkserver", "spawn"):
        raise ValueError(f"run_workers must be 'forkserver' or 'spawn', not {method!r}")
    if method == "spawn" or "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    if _installed:
        return _installed
    from dagster._grpc.server import DagsterApiServer

    if "self._mp_ctx = multiprocessing.get_context" not in _init_source(DagsterApiServer):
        log.warning("run_workers: this Dagster does not set DagsterApiServer._mp_ctx; run workers are spawned")
        return "spawn"
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    # a data descriptor on the class wins over the instance attribute __init__ sets
    DagsterApiServer._mp_ctx = property(lambda _self: context, lambda _self, _value: None)
    _installed = method
    if in_code_server():
        # start the fork server (and its imports) now, beside the code server's own start, not at the first run
        threading.Thread(
            target=multiprocessing.forkserver.ensure_running, name="forkserver-warmup", daemon=True
        ).start()
    return method


def in_code_server() -> bool:
    """Whether this process is a Dagster code server: ``dagster api grpc`` (what ``dagster-daemon``,
    ``dagster dev`` and ``dagster code-server start`` run)."""
    return sys.argv[1:3] == ["api", "grpc"]


def _init_source(cls) -> str:
    import inspect

    try:
        return inspect.getsource(cls.__init__)
    except (OSError, TypeError):
        return ""
