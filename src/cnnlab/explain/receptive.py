"""Receptive fields: how many input pixels each convolution or pooling layer's output can see.

Computed along the network's graph (``torch.fx``, with timm's own list of modules not to trace
into), so branches are handled: a ResNet shortcut's 1x1 convolution starts from its block's
input, not from the layer run just before it. Per layer of kernel k, stride s and dilation d:

    jump  j_out = j_in * s                       (input pixels between neighbouring outputs)
    field r_out = r_in + (d * (k - 1)) * j_in    (input pixels one output sees)

starting from j = r = 1 at the image. Where paths meet (an addition), the larger field counts.
Global poolings and the gates computed from them (squeeze-and-excitation) would make every later
field "the whole image"; they are left out, as is usual, so the numbers are the convolutional
field. Output sizes come from the same formulas and are checked against a real forward pass.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from cnnlab.errors import CnnlabError
from cnnlab.explain.layers import eager, sample_input
from cnnlab.models.inference import eval_mode

log = logging.getLogger("cnnlab")

Pair = tuple[int, int]


@dataclass(frozen=True)
class Geometry:
    """A layer's sliding window along (height, width)."""

    kernel: Pair
    stride: Pair
    dilation: Pair
    padding: Pair | None  # None: "same" padding (output = ceil(input / stride))
    ceil_mode: bool = False


@dataclass(frozen=True)
class FieldRow:
    """One convolution or pooling layer: its window and what its output sees."""

    name: str
    kind: str
    geometry: Geometry
    size: Pair  # output (H, W) by the formula (a real forward pass checks it)
    jump: Pair
    field: Pair


@dataclass(frozen=True)
class _Flow:
    field: Pair
    jump: Pair
    size: Pair


def _pair(value: Any) -> Pair:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def geometry(module: nn.Module) -> Geometry | None:
    """The window of a convolution or (non-adaptive) pooling module, None for any other module."""
    if not isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        return None
    kernel = _pair(module.kernel_size)
    stride = _pair(module.stride if module.stride is not None else module.kernel_size)
    dilation = _pair(getattr(module, "dilation", 1))
    same = type(module).__name__.endswith("Same") or module.padding == "same"  # timm's TF-style padding
    padding = None if same else _pair(0 if module.padding == "valid" else module.padding)
    return Geometry(kernel, stride, dilation, padding, bool(getattr(module, "ceil_mode", False)))


def _out_side(n: int, k: int, s: int, d: int, p: int | None, ceil_mode: bool) -> int:
    if p is None:
        return math.ceil(n / s)
    span = n + 2 * p - d * (k - 1) - 1
    return (math.ceil(span / s) if ceil_mode else span // s) + 1


def _per_axis(value: Callable[[int], int]) -> Pair:
    """(value(0), value(1)): a rule applied to the height and the width."""
    return value(0), value(1)


def _step(flow: _Flow, g: Geometry) -> _Flow:
    size = _per_axis(
        lambda a: _out_side(
            flow.size[a],
            g.kernel[a],
            g.stride[a],
            g.dilation[a],
            None if g.padding is None else g.padding[a],
            g.ceil_mode,
        )
    )
    field = _per_axis(lambda a: flow.field[a] + g.dilation[a] * (g.kernel[a] - 1) * flow.jump[a])
    jump = _per_axis(lambda a: flow.jump[a] * g.stride[a])
    return _Flow(field, jump, size)


class _Tracer(fx.Tracer):
    """Stops at convolutions and poolings (their window is all that matters) and at timm's leaves."""

    def __init__(self) -> None:
        from timm.layers import get_notrace_functions, get_notrace_modules

        super().__init__(autowrap_functions=tuple(get_notrace_functions()))
        self._leaves = tuple(get_notrace_modules())

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (
            geometry(m) is not None or isinstance(m, self._leaves) or super().is_leaf_module(m, module_qualified_name)
        )


def _real_sizes(model: nn.Module, x: torch.Tensor) -> dict[str, Pair]:
    """Output (H, W) of every convolution and pooling module in a real forward pass (first call)."""
    sizes: dict[str, Pair] = {}

    def record(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
            sizes.setdefault(name, (int(output.shape[-2]), int(output.shape[-1])))

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if geometry(m) is not None]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return sizes


def _walk(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, Geometry, _Flow]]:
    """(name, module, its window, flow after it) for each convolution/pooling module, following the traced graph.

    Every node's real output shape (``ShapeProp``) shows where a map is pooled to 1x1 or flattened:
    the flow stops there, so gates and heads computed from pooled vectors are not counted.
    """
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        graph = _Tracer().trace(model)
        traced = fx.GraphModule(model, graph)
        ShapeProp(traced).propagate(x)
    except Exception as exc:  # noqa: BLE001  any model code fx cannot follow
        raise CnnlabError(
            f"cannot follow the graph of {type(model).__name__} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:120]}); receptive fields need a traceable model"
        ) from None
    modules = dict(model.named_modules())
    flows: dict[fx.Node, _Flow] = {}
    out: list[tuple[str, nn.Module, Geometry, _Flow]] = []
    listed = set()
    for node in graph.nodes:
        meta = node.meta.get("tensor_meta")
        shape = tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()
        inputs = [flows[n] for n in node.all_input_nodes if n in flows]
        if node.op == "placeholder" and not flows:
            flows[node] = _Flow((1, 1), (1, 1), (int(x.shape[-2]), int(x.shape[-1])))
        elif not inputs or len(shape) != 4:
            continue  # not fed by the image's feature maps, or flattened
        elif node.op == "call_module" and (window := geometry(modules[str(node.target)])) is not None:
            flows[node] = _step(inputs[0], window)
            if node.target not in listed:  # a module run twice (e.g. test-time flips) is listed once
                listed.add(node.target)
                out.append((str(node.target), modules[str(node.target)], window, flows[node]))
        else:  # element-wise, normalisation, activation, addition...: the widest input's view
            widest = max(inputs, key=lambda f: (f.field, f.jump))
            if shape[-2:] == (1, 1) and widest.size != (1, 1):
                continue  # a global pooling: what follows sees "everything" and is not a field
            flows[node] = widest
    return out


def receptive_fields(model: nn.Module, channels: int, side: int) -> list[FieldRow]:
    """Per convolution/pooling layer, in forward order: window, output size, jump and receptive field.

    Raises:
        CnnlabError: the model cannot be traced, or has no convolution.
    """
    with eager(model) as net, eval_mode(net), torch.inference_mode(False), torch.no_grad():
        x = sample_input(net, channels, side)
        walked = _walk(net, x)
        real = _real_sizes(net, x)
    if not walked:
        raise CnnlabError(f"{type(model).__name__} has no convolution or pooling layer")
    rows = []
    for name, module, window, flow in walked:
        size = real.get(name, flow.size)
        if size != flow.size:  # a layer whose padding rule is not modelled here: trust the real pass
            log.warning(
                "layer %s: output %s by the formula but %s in the forward pass; showing the latter",
                name,
                flow.size,
                size,
            )
        rows.append(FieldRow(name, type(module).__name__, window, size, flow.jump, flow.field))
    return rows


def side_text(pair: Pair) -> str:
    """``(7, 7)`` -> "7", ``(1, 7)`` -> "1x7"."""
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def table_rows(rows: list[FieldRow]) -> list[dict[str, str | int]]:
    """The rows as the CSV and the printed table show them."""
    return [
        {
            "layer": r.name,
            "type": r.kind,
            "kernel": side_text(r.geometry.kernel),
            "stride": side_text(r.geometry.stride),
            "output": f"{r.size[0]}x{r.size[1]}",
            "jump": side_text(r.jump),
            "receptive_field": side_text(r.field),
        }
        for r in rows
    ]
