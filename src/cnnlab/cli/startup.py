"""The interpreter's garbage collector around a command: paused while it imports, skipped at exit.

A command that imports torch, Lightning, matplotlib and pandas holds about 550,000 objects the
collector tracks, and each full collection walks them all (0.3 s of CPU here). Left alone, the
collector ran seven full collections while ``cnnlab train`` imported (1.2 s of CPU, growing with
the heap) and several more when the interpreter finalized (2.1 s of CPU after the command's last
line, whatever the run's size: 7 s of wall clock on a busy machine). Module objects live as long
as the process, so those walks find almost nothing to free.
"""

from __future__ import annotations

import atexit
import gc

from cnnlab.collector import collector_paused  # noqa: F401  # the start-up's rule, shared with the data step

_exit_registered = False


def exit_without_collecting() -> None:
    """Makes the interpreter's collections at exit skip every object alive by then (once per process).

    ``gc.freeze()`` moves them to the permanent generation, which those collections skip (0.3 s of
    CPU left, module teardown). Every exit handler still runs (registered before the libraries a
    command imports, this one runs after theirs), the interpreter still flushes stdout and stderr,
    and by then a command has closed all it wrote (atomic writes; Lightning finalizes its loggers
    with the fit): what is skipped is freeing memory that the operating system takes back at once.
    """
    global _exit_registered
    if not _exit_registered:
        atexit.register(gc.freeze)
        _exit_registered = True
