"""The one batched inference loop: scoring under the precision a run trained in."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.config import build_config
from cnnlab.data.normalize import Normalize
from cnnlab.models.inference import accuracy, run_batches
from cnnlab.training.optim import bf16_is_fast
from cnnlab.training.trainer import run_autocast


def _dtypes_seen(model: nn.Module) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    model[0].register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


def test_autocast_scores_in_bf16_close_to_full_precision() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    images = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8)
    labels = torch.randint(0, 4, (40,))
    norm = Normalize([0.5] * 3, [0.5] * 3)
    seen = _dtypes_seen(model)
    full = torch.cat([out for _, out in run_batches(model, images, norm)])
    mixed = torch.cat([out for _, out in run_batches(model, images, norm, autocast=torch.bfloat16)])
    assert seen[0] == torch.float32 and seen[-1] == torch.bfloat16  # really ran in bf16
    assert mixed.dtype == torch.float32 and torch.allclose(full, mixed, atol=0.05)
    assert 0.0 <= accuracy(model, images, labels, norm, torch.bfloat16) <= 1.0


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "auto"])
def test_a_run_is_scored_in_the_precision_it_trained_in(precision: str) -> None:
    expected = torch.bfloat16 if precision == "bf16-mixed" and bf16_is_fast() else None
    if precision == "auto" and torch.cuda.is_available():
        pytest.skip("auto is mixed precision on a GPU")
    assert run_autocast(build_config(data="digits", precision=precision).train) == expected


def test_a_summary_and_eval_passes_leave_a_frozen_batchnorm_in_eval_mode() -> None:
    """Each module's own mode comes back: ``model.train(True)`` afterwards would wake a frozen BatchNorm."""
    from torch import nn

    from cnnlab.models.inference import eval_mode
    from cnnlab.models.summary import model_summary

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
    model.train()
    model[1].eval()  # frozen: its ImageNet statistics must not move
    assert "Conv2d" in model_summary(model, (3, 12, 12))
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == [True, True, False, True, True, True]
