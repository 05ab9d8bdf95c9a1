"""The interpreter's garbage collector paused around work that builds many objects at once.

A command that imports torch, Lightning, matplotlib and pandas holds about 550,000 objects the
collector tracks (790,000 once ``cnnlab.training.run_fit`` is imported), and each full collection walks
them all (0.3 s of CPU here). Allocating many objects in a burst (importing those libraries; listing
70,000 image files, a Path and a tuple each) triggers such collections again and again, and they find
almost nothing to free: module objects and a listing live on.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused(keep: bool = False) -> Iterator[None]:
    """No automatic collections while the block runs; the collector's state is restored.

    Imports, file listings and decoding make few reference cycles (a few hundred objects were freed
    by the seven collections ``cnnlab train``'s imports ran; decoding 1,000 photos left 17
    unreachable objects), so pausing it costs no memory to speak of.

    ``keep``: every object alive at the end is kept for the life of the process (the modules a
    command imports) and moved out of the collector's reach (``gc.freeze``). Without it the first
    full collection after the block still walks them all: once the data step no longer ran it,
    it fell on the first training step of ``cnnlab train`` (0.8 s), and a ``--time-budget`` run
    read that as its step time.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        if keep:
            gc.freeze()
    finally:
        if enabled:
            gc.enable()
