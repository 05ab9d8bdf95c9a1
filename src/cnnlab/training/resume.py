"""What ``--resume`` needs: where to continue from, and proof that the data is the same."""

from __future__ import annotations

from cnnlab.data.types import PreparedData
from cnnlab.errors import CnnlabError
from cnnlab.training.checkpoint import read_checkpoint
from cnnlab.training.record import RunRecord
from cnnlab.training.run_dir import RunFiles


def resume_point(files: RunFiles) -> str | None:
    """``last.ckpt`` if there is one (checked readable, safely), else None: start from scratch."""
    if not files.last.is_file():
        return None
    read_checkpoint(files.last)  # a truncated or unsafe file is a clear error, not a traceback
    return str(files.last)


def check_same_data(run: RunRecord, data: PreparedData) -> None:
    """Refuses to resume on a different split: the result would not be the run it claims to be."""
    saved = run.data.splits
    for name, image_set in data.splits.items():
        expected = saved[name].fingerprint if name in saved else None
        if expected and expected != image_set.fingerprint():
            raise CnnlabError(
                f"the {name} split differs from when the run started (files added, removed or "
                "changed); restore the data or start a new run"
            )
