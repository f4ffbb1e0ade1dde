"""Thread budgets for torch and onnxruntime on shared machines."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def threads_available() -> int:
    """CPU cores this process may run on (respects taskset/cgroup affinity, unlike cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads_default() -> int:
    """torch's current intra-op thread count, capped at the cores we may use.

    The caller (a Celery worker) may have chosen a number already; oversubscribed OpenMP
    threads slow torch by 10-100x, so never go above the available cores.
    """
    import torch

    return max(1, min(torch.get_num_threads(), threads_available()))


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[int]:
    """Run a block with ``num_threads`` torch threads (None: ``threads_default()``), then restore."""
    import torch

    previous = torch.get_num_threads()
    wanted = threads_default() if num_threads is None else max(1, int(num_threads))
    if wanted != previous:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
