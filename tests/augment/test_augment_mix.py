"""mix_batch: soft targets, label smoothing, mixup and CutMix."""

from __future__ import annotations

import pytest
import torch

from cnnlab.augment import mix_batch


def batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(n, 3, 16, 16), torch.arange(n) % 5


@pytest.mark.parametrize("mixup, cutmix", [(0.0, 0.0), (0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_soft_labels_sum_to_one(mixup: float, cutmix: float) -> None:
    x, y = batch(7)  # odd batch: timm's Mixup would assert here
    gen = torch.Generator().manual_seed(1)
    out, soft = mix_batch(x, y, 5, mixup, cutmix, label_smoothing=0.1, generator=gen)
    assert out.shape == x.shape and soft.shape == (7, 5)
    assert torch.allclose(soft.sum(1), torch.ones(7))
    assert out.min() >= 0 and out.max() <= 1


def test_label_smoothing_only_leaves_images_alone() -> None:
    x, y = batch()
    out, soft = mix_batch(x, y, 5, label_smoothing=0.1)
    assert out is x
    assert soft[0, 0].item() == pytest.approx(0.92) and soft[0, 1].item() == pytest.approx(0.02)


def test_mixup_blends_with_reversed_batch_and_labels_match() -> None:
    x, y = batch()
    x_before = x.clone()
    out, soft = mix_batch(x, y, 5, mixup_alpha=1.0, generator=torch.Generator().manual_seed(0))
    assert y[0] != y[-1]  # so the target's weight on y[0] is lambda
    lam = soft[0, y[0]].item()
    assert 0.0 < lam < 1.0
    assert torch.equal(x, x_before)  # the caller's batch is not modified
    assert torch.allclose(out[0], lam * x[0] + (1 - lam) * x[-1], atol=1e-5)


def test_cutmix_pastes_a_box_and_lambda_is_its_area() -> None:
    x = torch.zeros(4, 1, 16, 16)
    x[2:] = 1.0  # images 2, 3 white; partners of 1, 0
    y = torch.tensor([0, 1, 2, 3])
    out, soft = mix_batch(x, y, 4, cutmix_alpha=1.0, generator=torch.Generator().manual_seed(5))
    pasted = out[0].mean().item()  # fraction of image 0 that came from white image 3
    assert soft[0, 3].item() == pytest.approx(pasted, abs=1e-6)
    assert soft[0, 0].item() == pytest.approx(1 - pasted, abs=1e-6)


def test_same_generator_seed_same_mix() -> None:
    x, y = batch()
    a = mix_batch(x, y, 5, 0.4, 1.0, generator=torch.Generator().manual_seed(9))
    b = mix_batch(x, y, 5, 0.4, 1.0, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
