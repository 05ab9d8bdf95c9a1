"""The measuring primitives of ``cnnlab compare``: parameters, MACs, size, time and memory."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from cnnlab.comparison.measure import (
    count_layers,
    count_macs,
    peak_memory_growth,
    resident_kib,
    size_on_disk,
    time_calls,
)
from cnnlab.comparison.probe import ProbeSpec, measure_model
from cnnlab.models import create_model


def test_parameter_counts_equal_the_sum_over_the_parameters(one_torch_thread):
    figures = measure_model(
        ProbeSpec("simple_cnn", image_size=28, batch_size=2, threads=1, repeats=3, max_seconds=1.0, channels_last=True)
    )
    model = create_model("simple_cnn", num_classes=1000, in_chans=3, image_size=(28, 28))
    assert figures["params_total"] == figures["params_trainable"] == sum(p.numel() for p in model.parameters())
    # the lesson's CNN on 28 px RGB with an ImageNet head: conv 896 + conv 18,496 + dense 204,928 + 129,000
    assert figures["params_total"] == 353_320
    assert (figures["layers"], figures["weight_layers"]) == (4, 4)  # 2 conv + 2 dense, nothing else has weights
    assert figures["weights"] == "random" and figures["macs"] > 0 and figures["latency"]["median"] > 0


def test_layers_with_weights_and_weight_layers_are_counted_apart():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 2)
    )
    assert count_layers(model) == (3, 2)  # conv, BN, linear hold weights; conv and linear are weight layers


def test_macs_of_a_convolution_and_a_linear_layer_match_the_formula():
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    # out channels x out pixels x (in channels x kernel area)
    assert count_macs(conv, torch.rand(1, 3, 16, 16)) == 8 * 16 * 16 * 3 * 3 * 3
    assert count_macs(conv, torch.rand(2, 3, 16, 16)) == 2 * 8 * 16 * 16 * 3 * 3 * 3
    depthwise = nn.Conv2d(8, 8, kernel_size=3, padding=1, groups=8)
    assert count_macs(depthwise, torch.rand(1, 8, 16, 16)) == 8 * 16 * 16 * 3 * 3
    assert count_macs(nn.Linear(100, 10), torch.rand(1, 100)) == 100 * 10


def test_size_on_disk_is_the_weights_in_fp32():
    size = size_on_disk(nn.Linear(100, 10))
    assert 4 * (100 * 10 + 10) <= size < 4 * (100 * 10 + 10) + 1000  # tensors plus a small JSON header


def test_latency_of_a_tiny_and_a_large_model_is_positive_and_ordered(one_torch_thread):
    tiny = create_model("simple_cnn", num_classes=10, in_chans=3, image_size=(28, 28)).eval()
    large = create_model("resnet18", num_classes=10, in_chans=3, image_size=(64, 64)).eval()
    with torch.inference_mode():
        fast = time_calls(lambda: tiny(torch.rand(1, 3, 28, 28)), repeats=5, max_seconds=2.0)
        slow = time_calls(lambda: large(torch.rand(1, 3, 64, 64)), repeats=5, max_seconds=2.0)
    assert 0 < fast.p25 <= fast.median <= fast.p75
    assert 0 < slow.p25 <= slow.median <= slow.p75
    assert slow.median > fast.median  # 148 MMACs against 3
    assert fast.repeats == slow.repeats == 5


def test_time_calls_stops_after_max_seconds_but_not_before_three_repeats():
    timing = time_calls(lambda: None, repeats=1000, max_seconds=0.0, warmup=0)
    assert timing.repeats == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the resettable peak (VmHWM) is Linux's")
def test_peak_memory_growth_sees_a_temporary_allocation():
    size = 64 * 2**20

    def allocate() -> None:
        torch.ones(size // 4)  # 64 MiB touched, then freed before the call returns

    growth = peak_memory_growth(allocate, resident_kib())
    assert growth is not None and size * 0.9 <= growth <= size * 1.5


def test_models_are_timed_in_turns_so_load_falls_on_all_of_them_alike() -> None:
    from cnnlab.comparison.measure import time_interleaved

    order: list[str] = []

    def timer(name: str, seconds: float):
        def run(count: int) -> list[float]:
            order.append(name)
            return [seconds] * count

        return run

    timings = time_interleaved(
        {"a": timer("a", 0.001), "b": timer("b", 0.002), "big": timer("big", 1.0)},
        repeats=10,
        max_seconds=3.0,
        rounds=5,
    )
    assert order[:3] == ["a", "b", "big"] and order[3:6] == ["b", "big", "a"]  # each round starts one later
    assert timings["a"].repeats == timings["b"].repeats == 10  # blocks of 2 over 5 rounds
    assert timings["big"].repeats == 4  # stopped once its passes took 3 s (never under 3 passes)
    assert order.count("big") == 2 and order.index("big") < order.index("a", 3)  # interleaved, not one after another


def test_a_burst_of_load_marks_the_comparison_busy_instead_of_ranking_noise() -> None:
    from cnnlab.comparison.architectures import busy_machine
    from cnnlab.comparison.measure import Timing

    steady = Timing.of([0.010, 0.011, 0.010, 0.012, 0.011])
    erratic = Timing.of([0.020, 0.600, 0.025, 0.900, 0.030])  # the lesson's Lite0 under load: IQR 37-1512 ms
    assert busy_machine(0.05, {"vgg16": steady}) is None
    assert "other processes kept 1.0 cores busy" in busy_machine(1.0, {"vgg16": steady})  # while it was timed
    assert "efficientnet_lite0" in busy_machine(None, {"vgg16": steady, "efficientnet_lite0": erratic})
    assert erratic.minimum == 0.020 and steady.spread < 1.0 < erratic.spread
