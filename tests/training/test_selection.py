"""Stage 2's criterion (issue #20): chosen on validation accuracy, loss breaking ties, and kept over
stage 1 only with a margin of more than one image (or one image and a lower loss)."""

from __future__ import annotations

import math

import pytest

from cnnlab.config import build_config
from cnnlab.training.record import StageRecord, ValScores
from cnnlab.training.selection import score_to_beat, select_score, stage_criterion, verdict
from cnnlab.training.stage_plan import kept_weights


def _record(name: str, errors: int, loss: float, select: str = "accuracy", images: int = 100) -> StageRecord:
    figures = {
        "epoch": 3,
        "loss": loss,
        "accuracy": 1 - errors / images,
        "errors": errors,
        "images": images,
        "score": select_score(errors, loss, select),
    }
    return StageRecord(
        name=name, select=select, val_at_best=ValScores(**figures), best_val_loss=loss, stage_best_val_loss=loss
    )


def _replaces(stage1: StageRecord, stage2: StageRecord) -> bool:
    """What Lightning's checkpoint does: stage 2's best score must get below the score to beat."""
    assert stage2.val_at_best is not None and stage2.val_at_best.score is not None
    to_beat = score_to_beat(stage1, stage2.select)
    return to_beat is not None and stage2.val_at_best.score < to_beat


@pytest.mark.parametrize(
    "errors, loss, kept",
    [
        (17, 0.60, True),  # 2 more right: kept even with a higher loss (dtd10: 81 -> 84-86%, loss up)
        (18, 0.40, True),  # 1 more right and a lower loss
        (18, 0.60, False),  # 1 more right but a higher loss: one image is noise
        (19, 0.10, False),  # as many right: a lower loss alone does not replace stage 1
        (21, 0.10, False),  # fewer right
        (15, math.nan, False),  # diverged
    ],
)
def test_stage_two_replaces_stage_one_only_by_more_than_one_image_or_one_and_a_lower_loss(errors, loss, kept) -> None:
    stage1 = _record("frozen", 19, 0.50, select="loss")
    stage2 = _record("finetune", errors, loss)
    assert _replaces(stage1, stage2) is kept
    stage2.replaced_best = kept
    why = kept_weights([stage1, stage2])
    assert why.stage == ("finetune" if kept else "frozen") and why.select == "accuracy"
    assert f"got {100 - errors} of 100 validation images right (epoch 3), stage 'frozen' 81" in why.why
    assert ("replaces it only with more than 1 more image right" in why.why) is not kept


def test_within_a_stage_fewer_errors_win_then_the_lower_loss() -> None:
    assert select_score(3, 5.0, "accuracy") < select_score(4, 0.01, "accuracy")
    assert select_score(3, 0.2, "accuracy") < select_score(3, 0.3, "accuracy")
    assert select_score(3, 0.2, "loss") == 0.2 and select_score(0, math.inf, "accuracy") == math.inf


def test_the_loss_criterion_keeps_the_previous_rule() -> None:
    config = build_config(finetune_select="loss")
    assert stage_criterion("finetune", config) == "loss" and stage_criterion("frozen", build_config()) == "loss"
    assert stage_criterion("finetune", build_config()) == "accuracy"
    stage1, stage2 = _record("frozen", 19, 0.50, "loss"), _record("finetune", 10, 0.55, "loss")
    assert not _replaces(stage1, stage2)  # many more right, but the loss rose: the loss rule keeps stage 1
    stage2.replaced_best = False
    assert verdict(stage2, stage1) == (
        "stage 'finetune' did not lower the validation loss (0.5500 at best, against 0.5000)"
    )
