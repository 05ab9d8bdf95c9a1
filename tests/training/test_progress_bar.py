"""The terminal's epoch bar moves a few times a second, not after every batch (it cost 13% of a short epoch)."""

from __future__ import annotations

import pytest

from cnnlab.training import trainer


def test_bar_moves_a_few_times_a_second_and_at_the_last_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(trainer.time, "monotonic", lambda: clock[0])
    bar = trainer._RichEpochs()
    assert bar.refresh_rate == trainer._BAR_REDRAWS_PER_SECOND
    moved = []
    for batch in range(100):  # 100 batches of 10 ms: one second
        moved.append(bar._due(batch, total=100))
        clock[0] += 0.01
    assert moved[0] and moved[-1]  # the first batch and the epoch's last always show
    assert 3 <= sum(moved) <= trainer._BAR_REDRAWS_PER_SECOND + 2
