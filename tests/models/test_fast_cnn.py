"""fast_cnn, fast_cnn_small, fast_cnn_slim and fast_cifar: shapes (1 and 3 channels, small sizes), whitening, TTA."""

from __future__ import annotations

import pytest
import torch

from cnnlab.models import create_model, own_model_names
from cnnlab.models.fast_cnn import FastCifarNet, PatchWhitening


@pytest.mark.parametrize("name", ["fast_cnn", "fast_cnn_small", "fast_cnn_slim", "fast_cifar"])
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
    assert {"fast_cnn", "fast_cnn_small", "fast_cnn_slim", "fast_cifar"} <= set(own_model_names())
    sizes = {
        name: sum(p.numel() for p in create_model(name, num_classes=10, in_chans=1, image_size=(28, 28)).parameters())
        for name in ("fast_cnn", "fast_cnn_small", "fast_cnn_slim")
    }
    assert 30_000 < sizes["fast_cnn_slim"] < sizes["fast_cnn_small"] < sizes["fast_cnn"] < 300_000


def test_slim_net_learns_a_tiny_task(one_torch_thread) -> None:
    """--recipe fast's net: a few SGD steps on digits-like images (a bar on the left or the right) learn it."""
    torch.manual_seed(0)
    images = torch.rand(128, 1, 28, 28) * 0.3
    labels = torch.randint(0, 2, (128,))
    for i, label in enumerate(labels.tolist()):
        images[i, 0, 6:22, (5 if label == 0 else 19) : (9 if label == 0 else 23)] = 1.0
    model = create_model("fast_cnn_slim", num_classes=2, in_chans=1, image_size=(28, 28))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def accuracy() -> float:
        model.eval()
        with torch.no_grad():
            return float((model(images).argmax(1) == labels).float().mean())

    before = accuracy()
    model.train()
    for step in range(30):
        batch = slice(32 * (step % 4), 32 * (step % 4 + 1))
        loss = torch.nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert accuracy() >= max(0.95, before + 0.2)


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
        model.tta = "none"
        assert not torch.allclose(model(x), model(x.flip(-1)), atol=1e-5)
    model.tta = "flip"
    assert not torch.allclose(model(x), model(x.flip(-1)), atol=1e-5)  # with gradients (Grad-CAM): one view


def test_flip_translate_tta_weighs_the_six_views_as_airbench() -> None:
    torch.manual_seed(0)
    model = FastCifarNet(10, 3, (16, 16), widths=(8, 8, 8))
    model.train()
    model(torch.rand(8, 3, 16, 16))
    model.eval()
    x = torch.rand(3, 3, 16, 16)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [x, padded[..., :16, :16], padded[..., 2:, 2:]]
    with torch.no_grad():
        model.tta = "none"
        mirrored = [(model(v) + model(v.flip(-1))) / 2 for v in views]
        expected = mirrored[0] / 2 + (mirrored[1] + mirrored[2]) / 4
        model.tta = "flip-translate"
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_airbench_options_dirac_start_and_fast_bn_shifts() -> None:
    torch.manual_seed(0)
    plain = FastCifarNet(10, 3, (32, 32), widths=(16, 32, 32))
    model = FastCifarNet(10, 3, (32, 32), widths=(16, 32, 32), shift_lr=64.0, dirac=True)
    plain.load_state_dict(model.state_dict())  # same weights, same state-dict keys
    conv = model.groups[1].conv1  # 16 -> 32 channels: the first 16 filters pass their input through
    assert torch.equal(conv.weight[:16, :, 1, 1], torch.eye(16))
    x = torch.rand(8, 3, 32, 32)
    for p in model.parameters():  # as a stage that trains every layer does: the fixed ones stay fixed
        p.requires_grad_(True)
    for net in (plain, model):
        net.train()
        net(x).square().sum().backward()
    bn, plain_bn = model.groups[0].bn1, plain.groups[0].bn1
    assert "weight" not in dict(bn.named_parameters()) and torch.equal(bn.weight, torch.ones(16))  # scale: 1
    assert "conv.weight" not in dict(model.stem.named_parameters())  # the whitening is never trained
    assert torch.allclose(bn.bias.grad, 64 * plain_bn.bias.grad, rtol=1e-4, atol=1e-6)
