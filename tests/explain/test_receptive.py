"""Receptive fields: hand-computed values for a small stack, published ones for ResNet, real output sizes."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from cnnlab.explain.receptive import receptive_fields, table_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def real_output_sides(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, int]]:
    """Output (H, W) of each conv/pool module in a plain forward pass, independently of the code under test."""
    sides: dict[str, tuple[int, int]] = {}

    def record(name: str):
        def hook(module: nn.Module, args: object, out: torch.Tensor) -> None:
            sides.setdefault(name, tuple(out.shape[-2:]))

        return hook

    handles = [
        m.register_forward_hook(record(n))
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))
    ]
    with torch.no_grad():
        model.eval()(x)
    for handle in handles:
        handle.remove()
    return sides


def test_small_stack_matches_hand_computed_fields_and_the_real_forward_pass(caplog) -> None:
    stack = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),  # r 3, j 1 -> r 4, j 2
        nn.Conv2d(4, 4, 3, stride=2, padding=1),  # r 4 + 2*2 = 8, j 4
        nn.Conv2d(4, 4, 5, dilation=2),  # kernel spans 9: r 8 + 8*4 = 40, j 4
        nn.AvgPool2d(3, ceil_mode=True),  # r 40 + 2*4 = 48, j 12
    )
    with caplog.at_level(logging.WARNING, logger="cnnlab"):
        rows = receptive_fields(stack, 1, 40)
    assert [(r.name, r.field[0], r.jump[0], r.size) for r in rows] == [
        ("0", 3, 1, (38, 38)),
        ("2", 4, 2, (19, 19)),
        ("3", 8, 4, (10, 10)),
        ("4", 40, 4, (2, 2)),
        ("5", 48, 12, (1, 1)),
    ]
    assert not caplog.records  # the formula's sizes are the forward pass's: no mismatch was found
    assert {r.name: r.size for r in rows} == real_output_sides(stack, torch.zeros(1, 1, 40, 40))
    assert table_rows(rows)[3] == {
        "layer": "4",
        "type": "Conv2d",
        "kernel": "5",
        "stride": "1",
        "output": "2x2",
        "jump": "4",
        "receptive_field": "40",
    }


def test_branches_follow_the_graph_resnet18_has_its_published_435_px_field() -> None:
    import timm

    model = timm.create_model("resnet18", num_classes=3).to(memory_format=torch.channels_last)
    rows = receptive_fields(model, 3, 224)
    by_name = {r.name: r for r in rows}
    assert by_name["layer4.1.conv2"].field == (435, 435) and by_name["layer4.1.conv2"].jump == (32, 32)
    # A shortcut 1x1 conv sees its block's input (through conv1, bn1, maxpool, layer1), not conv2 before it.
    assert by_name["layer2.0.downsample.0"].field == by_name["layer1.1.conv2"].field
    assert {r.name: r.size for r in rows} == real_output_sides(model, torch.zeros(1, 3, 224, 224))
