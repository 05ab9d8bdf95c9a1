"""Structured pruning that keeps what the network computed: residual stream kept, Taylor importance,
layers refitted by least squares (cnnlab.deploy.prune_reconstruct)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cnnlab.deploy.prune_network import prune_channels
from cnnlab.deploy.prune_reconstruct import all_refittable, reconstruct_layers

pytest.importorskip("torch_pruning")


class Block(nn.Module):
    """An inverted-residual block: 1x1 expand, BN, ReLU, 1x1 project, added to its input."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.conv_pw = nn.Conv2d(width, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv_pwl = nn.Conv2d(hidden, width, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_pwl(torch.relu(self.bn1(self.conv_pw(x))))


class TinyResidual(nn.Module):
    def __init__(self, width: int = 8, hidden: int = 32, classes: int = 3) -> None:
        super().__init__()
        self.conv_stem = nn.Conv2d(3, width, 3, padding=1)
        self.block = Block(width, hidden)
        self.classifier = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.block(self.conv_stem(x)).mean((2, 3)))


def _network(seed: int = 0) -> TinyResidual:
    torch.manual_seed(seed)
    net = TinyResidual().eval()
    with torch.no_grad():  # statistics as after training, so eval mode computes something non-trivial
        net.block.bn1.running_mean.uniform_(-0.2, 0.2)
        net.block.bn1.running_var.uniform_(0.5, 1.5)
    return net


def _images(count: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(count, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_the_residual_stream_is_kept_whole_and_only_the_blocks_inside_is_pruned() -> None:
    net = _network()
    removed = prune_channels(net, _images(2), 0.5, ranking="layer")
    assert net.conv_stem.out_channels == 8 and net.block.conv_pwl.out_channels == 8  # the stream
    assert net.block.conv_pw.out_channels == 16 and net.block.conv_pwl.in_channels == 16  # inside
    assert len(removed.inputs["block.conv_pwl"]) == 16 and len(removed.outputs["block.conv_pw"]) == 16
    assert all_refittable(net, removed)  # the 1x1 projection lost inputs: least squares refits it


def test_without_keep_residual_the_stream_is_pruned_too() -> None:
    net = _network()
    prune_channels(net, _images(2), 0.5, keep_residual=False, ranking="layer")
    assert net.conv_stem.out_channels == 4


def test_taylor_importance_removes_channels_that_do_not_change_the_loss_even_when_their_weights_are_large() -> None:
    net = _network()
    with torch.no_grad():
        net.block.conv_pw.weight[16:] *= 10  # large weights: magnitude would keep these ...
        net.block.conv_pwl.weight[:, 16:] = 0  # ... but nothing downstream reads them
    original = copy.deepcopy(net)
    images = _images()
    labels = original(images).argmax(1)
    magnitude = copy.deepcopy(net)
    prune_channels(magnitude, images[:2], 0.5, ranking="layer")
    prune_channels(net, images[:2], 0.5, labelled=[(images, labels)], ranking="layer")
    with torch.no_grad():
        assert torch.allclose(net(images), original(images), atol=1e-5)  # only the dead channels went
        assert not torch.allclose(magnitude(images), original(images), atol=1e-2)


def test_reconstruction_refits_the_projection_so_the_output_comes_back() -> None:
    net = _network()
    original = copy.deepcopy(net)
    images = _images(128)
    removed = prune_channels(net, images[:2], 0.5, ranking="layer")
    with torch.no_grad():
        before = (net(images) - original(images)).pow(2).mean()
        refitted = reconstruct_layers(net, original, removed, list(images.split(32)))
        after = (net(images) - original(images)).pow(2).mean()
    assert refitted == ["block.conv_pwl"]
    assert after < 0.5 * before


def test_reconstruction_is_exact_when_the_removed_inputs_are_combinations_of_the_kept_ones() -> None:
    torch.manual_seed(0)
    features = torch.randn(256, 6)
    inputs = torch.cat([features, features @ torch.randn(6, 6)], 1)  # 12 channels, 6 of them redundant
    original = nn.Sequential(nn.Identity(), nn.Linear(12, 4)).eval()
    pruned = nn.Sequential(nn.Identity(), nn.Linear(6, 4)).eval()
    with torch.no_grad():
        pruned[1].bias.copy_(original[1].bias)
    from cnnlab.deploy.prune_reconstruct import RemovedChannels

    removed = RemovedChannels(inputs={"1": list(range(6, 12))})

    class Keep6(nn.Module):  # the pruned network sees only the first 6 channels
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x[:, :6])

    reconstruct_layers(Keep6(pruned), _Named(original), _renamed(removed), list(inputs.split(64)))
    with torch.no_grad():
        assert torch.allclose(pruned(inputs[:, :6]), original(inputs), atol=1e-2)  # ridge: not 0


class _Named(nn.Module):
    """The original under the same module names as Keep6's (inner.1)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def _renamed(removed):  # type: ignore[no-untyped-def]
    from cnnlab.deploy.prune_reconstruct import RemovedChannels

    return RemovedChannels(inputs={f"inner.{k}": v for k, v in removed.inputs.items()})
