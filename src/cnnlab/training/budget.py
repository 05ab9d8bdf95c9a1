"""How ``--time-budget`` is split between a run's stages, across resumes.

The budget is the run's training time: every stage (a frozen stage's feature extraction
included), summed over attempts. A frozen stage followed by fine-tuning may use up to
:data:`FROZEN_SHARE` of it: on cached features it usually needs far less, and what it leaves
goes to fine-tuning, which gets the rest of the budget. A single stage gets it all. A resumed
run gets what is left: the seconds each stage spent are kept in run.json and, for the stage
that was interrupted, in its checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

# Stage 1 on cached features is one pass of the backbone plus epochs of milliseconds; a third of
# the budget covers that pass for folders a budgeted run can fine-tune at all, and whatever it
# does not use goes to stage 2.
FROZEN_SHARE = 0.35
# Below this, a stage cannot do one batch and one validation worth having: it is skipped.
MIN_STAGE_SECONDS = 1.0


@dataclass(frozen=True)
class StageBudget:
    """One stage's share of the run's budget."""

    seconds: float  # what this stage may use in all, including what it used before a resume
    used_before: float  # seconds this stage spent in earlier attempts (from its checkpoint)

    @property
    def left(self) -> float:
        return self.seconds - self.used_before


def stage_budget(total: float, stages_left: int, used_by_finished: float, used_by_this: float) -> StageBudget:
    """The share of the stage about to run (or resume).

    Args:
        total: the run's budget in seconds.
        stages_left: stages still to run, this one included.
        used_by_finished: seconds the finished stages used.
        used_by_this: seconds this stage used in earlier attempts.
    """
    remaining = max(total - used_by_finished, 0.0)
    share = remaining if stages_left == 1 else min(remaining, FROZEN_SHARE * total)
    return StageBudget(share, used_by_this)


def split_line(total: float, stage_names: list[str]) -> str:
    """The line printed at the start of a budgeted run: how its budget is split."""
    if len(stage_names) == 1:
        return f"time budget {total:g} s: all of it for stage '{stage_names[0]}'"
    first = FROZEN_SHARE * total
    return (
        f"time budget {total:g} s: stage '{stage_names[0]}' (feature extraction included) up to "
        f"{first:.0f} s, stage '{stage_names[1]}' the rest (at least {total - first:.0f} s)"
    )
