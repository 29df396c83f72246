"""What the run workers' fork server prepares beyond plain imports (the last entry of
``orchestration.run_workers.PRELOAD``): state that costs seconds to build, holds no thread, file handle or
device context, and so is safe to inherit through ``fork()``.

* the PII gate's Presidio engine (``quality.pii.build_engine``, about 1.2 s): an ingest run builds it at the
  first value that passes the prefilter, which most windows have;
* matplotlib with the Agg backend and ``pyplot`` (about 1.4 s): the ``drift_report`` run draws with them.

Models are not loaded here (a champion changes between runs and CUDA would not survive a fork). A failure is
logged and the fork server goes on: each run then builds what it needs itself, as with ``spawn``.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def warm() -> None:
    """Build what is described above in this process; never raises."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401 - imported for the forked run workers

        from quality.pii import build_engine

        build_engine()
    except Exception:  # the runs build it themselves
        log.exception("run_worker_preload: warming the fork server failed; each run builds what it needs")


warm()
