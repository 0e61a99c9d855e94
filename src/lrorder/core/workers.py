"""Worker processes that die with their parent: what `lrorder sweep` and `lrorder reproduce`
run their runs in. A killed parent (even by kill -9) leaves no worker computing, holding a
lock or keeping the multiprocessing resource tracker alive."""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with(parent: int, threads: int | None) -> None:
    """Worker initializer: end with the parent; use `threads` intra-op threads (None: torch's
    default), so parallel workers share the cores instead of fighting over them."""
    if sys.platform == "linux":  # the kernel sends SIGKILL when the parent exits
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


@contextlib.contextmanager
def pool(workers: int, threads: int | None = None) -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    """A process pool of `workers` that die with this process (spawned: torch is not fork-safe)."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_die_with,
                                                initargs=(os.getpid(), threads)) as executor:
        yield executor
