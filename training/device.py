"""Device, thread and bf16 selection for training on CUDA or (mostly) a few CPU cores.

On CPU, torch's OpenMP pool collapses when it has more threads than free cores (measured: 2 threads
next to another CPU-bound process fell from ~5k to ~0.5k tokens/s), so threads are capped to the cores
this process may run on. bf16 autocast is ~1.2-1.4x faster on CPUs with AVX512-BF16/AMX and is only
switched on automatically when mkldnn reports support.
"""

from __future__ import annotations

import os

import torch

__all__ = ["available_cores", "bf16_supported", "configure_threads", "select_device"]


def select_device() -> torch.device:
    """The training device: ``cuda`` if a CUDA device is available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_cores() -> int:
    """Number of CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def configure_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count and return it.

    Args:
        threads: wanted thread count; None means every available core. Capped to ``available_cores()``.

    Returns:
        The number of threads set with ``torch.set_num_threads``.

    Raises:
        ValueError: if ``threads`` is not None and < 1.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"`threads` must be None or >= 1, got {threads}")
    cores = available_cores()
    n = cores if threads is None else min(threads, cores)
    torch.set_num_threads(n)
    return n


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is fast on ``device``.

    CUDA: ``torch.cuda.is_bf16_supported()``. CPU: ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``
    (true on AVX512-BF16 / AMX CPUs); False if that private op is missing in this torch build.
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False
