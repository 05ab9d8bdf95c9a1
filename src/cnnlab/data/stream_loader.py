"""litdata's StreamingDataLoader, its epoch told by the Trainer: a resumed run shuffles as an uninterrupted one.

Imported only once litdata is known to be installed (cnnlab.data.pack_read.require_litdata).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from litdata import StreamingDataLoader


class EpochStreamingLoader(StreamingDataLoader):
    """Shuffles epoch k (0-based) as litdata's epoch k + 1, whatever came before in this process.

    litdata counts epochs itself, from 0 in each new loader, so a resumed run (a new process, the
    Trainer at epoch k) would replay epoch 1's shuffle. ``epoch_of`` (the Trainer's current epoch)
    sets the count as each epoch starts. A checkpoint's loader state (Lightning saves and restores a
    stateful loader's) gives only the epoch: cnnlab checkpoints at epoch ends, so there is no
    position within an epoch to restore.
    """

    def __init__(self, *args: Any, epoch_of: Callable[[], int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epoch_of = epoch_of

    def __iter__(self) -> Iterator[Any]:
        if self.epoch_of is not None:
            self.current_epoch = int(self.epoch_of())  # litdata adds 1 as the epoch starts
        return super().__iter__()

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        self.current_epoch = int(obj["current_epoch"])
