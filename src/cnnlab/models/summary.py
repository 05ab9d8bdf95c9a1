"""A Keras-style ``model.summary()``: layer, output shape, parameters, trainable vs frozen."""

from __future__ import annotations

import re

from torch import nn

from cnnlab.models.inference import modes_kept

_COUNT_UNITS = {
    "NONE": "count",
    "KILOBYTES": "thousands",
    "MEGABYTES": "millions",
    "GIGABYTES": "billions",
    "TERABYTES": "trillions",
}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def model_summary(model: nn.Module, input_shape: tuple[int, int, int], depth: int = 3) -> str:
    """The summary table as text, computed with torchinfo on one input of ``input_shape``."""
    from torchinfo import summary

    with modes_kept(model):  # torchinfo leaves the model in eval mode
        stats = summary(
            model,
            input_size=(1, *input_shape),
            col_names=("output_size", "num_params", "trainable"),
            depth=depth,
            mode="eval",  # no dropout draws: a summary must not shift the random stream
            verbose=0,
            device="cpu",
        )
    # torchinfo prints the count's unit as an enum ("Total mult-adds (Units.MEGABYTES)"); it is a
    # count of multiply-adds in millions, not bytes.
    return re.sub(r"\(Units\.(\w+)\)", lambda m: f"({_COUNT_UNITS.get(m[1], m[1].lower())})", str(stats))


def trainable_table(model: nn.Module) -> str:
    """Parameters per top-level module and whether they train, as Keras prints after freezing.

    A module is ``trainable``, ``frozen``, or ``partly`` (with how much of it trains): after
    unfreezing the top 10 layers, the backbone's block stack shows as partly trainable.
    """
    rows = [("module", "parameters", "trains")]
    for name, child in model.named_children():
        params = list(child.parameters())
        total = sum(p.numel() for p in params)
        if not total:
            continue
        trainable = sum(p.numel() for p in params if p.requires_grad)
        state = "yes" if trainable == total else "no" if trainable == 0 else f"partly: {trainable:,}"
        rows.append((name, f"{total:,}", state))
    total, trainable = count_parameters(model)
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"  {a:<{widths[0]}}  {b:>{widths[1]}}  {c}" for a, b, c in rows]
    lines.append(f"  Trainable params: {trainable:,}  Frozen params: {total - trainable:,}")
    return "\n".join(lines)
