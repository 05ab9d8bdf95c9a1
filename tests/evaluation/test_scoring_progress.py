"""Scoring a split shows its progress (a bar on a terminal, one line in logs when it is slow)."""

from __future__ import annotations

import torch
from torch import nn

import cnnlab.evaluation.evaluator as evaluator
from cnnlab.data.normalize import Normalize
from cnnlab.data.types import ImageSet


def test_scoring_advances_a_progress_over_every_image(monkeypatch, capsys) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    images = torch.randint(0, 256, (1100, 3, 8, 8), dtype=torch.uint8)
    split = ImageSet(images, torch.arange(1100) % 3, [f"{i}.png" for i in range(1100)])
    original = evaluator.Progress
    seen = []

    def recorded(*args, **kwargs):
        progress = original(*args, **kwargs, quiet_below=0.0)  # print the closing line however fast
        seen.append(progress)
        return progress

    monkeypatch.setattr(evaluator, "Progress", recorded)
    _, probs = evaluator.score_split(model, Normalize([0.5] * 3, [0.5] * 3), split, 3)
    assert len(seen) == 1 and seen[0].total == seen[0].done == 1100 and probs.shape == (1100, 3)
    assert "scoring 1,100 images: 1,100 images in" in capsys.readouterr().out
