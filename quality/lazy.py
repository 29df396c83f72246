"""One lazily built, process-wide instance of an expensive object (the Presidio engines, the GX context)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def lazy_singleton(build: Callable[[], T]) -> Callable[[], T]:
    """A function that returns the one instance ``build()`` makes on its first call; thread-safe (built once,
    under a lock). A forked worker inherits an instance built before the fork."""
    lock = threading.Lock()
    built: list[T] = []

    def instance() -> T:
        with lock:
            if not built:
                built.append(build())
            return built[0]

    return instance
