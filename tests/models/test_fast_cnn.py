"""fast_cnn and fast_cifar: shapes for 1 and 3 channels and small sizes, whitening, flip TTA."""

from __future__ import annotations

import pytest
import torch

from cnnlab.models import create_model, own_model_names
from cnnlab.models.fast_cnn import FastCifarNet, PatchWhitening


@pytest.mark.parametrize("name", ["fast_cnn", "fast_cifar"])
@pytest.mark.parametrize("chans,side", [(1, 28), (3, 32), (1, 8), (3, 12), (3, 64)])
def test_forward_shapes(name: str, chans: int, side: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=chans, image_size=(side, side))
    model.train()
    assert model(torch.rand(4, chans, side, side)).shape == (4, 7)
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(2, chans, side, side)).shape == (2, 7)


def test_registered_and_sized() -> None:
    assert {"fast_cnn", "fast_cifar"} <= set(own_model_names())
    small = create_model("fast_cnn", num_classes=10, in_chans=1, image_size=(28, 28))
    params = sum(p.numel() for p in small.parameters())
    assert 30_000 < params < 300_000  # small enough for seconds per MNIST epoch on a CPU


def test_whitening_is_set_from_the_first_training_batch_and_kept() -> None:
    torch.manual_seed(0)
    layer = PatchWhitening(3)
    x = torch.randn(64, 3, 16, 16) * torch.tensor([1.0, 3.0, 0.2]).view(1, 3, 1, 1)
    layer.eval()
    layer(x)
    assert not bool(layer.initialised)  # evaluation (e.g. a model summary) must not set it
    layer.train()
    out = layer(x)
    assert bool(layer.initialised)
    half = out[:, : layer.out_chans // 2]  # the filters; the rest are their negatives
    features = half.permute(0, 2, 3, 1).reshape(-1, half.shape[1])
    cov = torch.cov(features.T)
    assert torch.allclose(cov, torch.eye(len(cov)), atol=0.05)  # whitened: identity covariance
    weight = layer.conv.weight.clone()
    layer(torch.randn(8, 3, 16, 16))  # a later batch leaves the filters alone
    assert torch.equal(weight, layer.conv.weight)
    fresh = PatchWhitening(3)
    fresh.load_state_dict(layer.state_dict())  # a checkpoint carries the "already set" flag
    fresh.train()
    fresh(torch.randn(8, 3, 16, 16))
    assert torch.equal(fresh.conv.weight, weight)


def test_flip_tta_makes_eval_predictions_mirror_invariant() -> None:
    torch.manual_seed(0)
    model = FastCifarNet(10, 3, (32, 32), widths=(16, 32, 32))
    model.train()
    model(torch.rand(8, 3, 32, 32))  # sets the whitening
    model.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), model(x.flip(-1)), atol=1e-5)
        model.flip_tta = False
        assert not torch.allclose(model(x), model(x.flip(-1)), atol=1e-5)
