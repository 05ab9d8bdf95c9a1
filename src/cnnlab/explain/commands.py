"""``cnnlab explain filters | feature-maps | gradcam | receptive-field RUN``: one function per command."""

from __future__ import annotations

import csv
import html
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.explain import layers as net_layers
from cnnlab.explain.cam import Heatmaps, cam_session, no_evidence_text
from cnnlab.explain.inputs import ExplainedRun, UserImages, class_index, file_names, load_images, open_explained
from cnnlab.explain.model_figures import (
    CAM_SCALE,
    EIGENCAM_SCALE,
    CamPanel,
    plot_feature_maps,
    plot_filters,
    plot_gradcam,
    plot_receptive_fields,
)
from cnnlab.explain.receptive import receptive_fields, table_rows
from cnnlab.explain.settings import FeatureMapsOptions, FiguresOptions, GradcamOptions
from cnnlab.figures import png_html
from cnnlab.io import atomic_write_text

log = logging.getLogger("cnnlab")
CHUNK = 16  # images whose feature maps are held at once


@dataclass
class Explanation:
    """What a command wrote, the rows it prints, and a line saying what the pictures show."""

    written: list[Path]
    rows: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    def _repr_html_(self) -> str:  # in a notebook: the pictures and what they show
        return f"<p>{html.escape(self.note)}</p>{png_html(self.written)}"


def probe_run(run: ExplainedRun) -> list[net_layers.Layer]:
    """Every layer of the run's network, from one forward pass of a blank image of its input size."""
    model = run.trained.model
    return net_layers.probe(
        model, net_layers.sample_input(model, run.trained.preprocess.channels, run.trained.preprocess.side)
    )


def first_conv(layers: list[net_layers.Layer]) -> net_layers.Layer:
    """The first convolution the forward pass runs (its input is the image itself).

    Raises:
        CnnlabError: the network has no convolution.
    """
    for layer in layers:
        if isinstance(layer.module, nn.Conv2d):
            return layer
    raise CnnlabError("the network has no convolution layer, so it has no filters to show")


def filters_figure(model: nn.Module, layers: list[net_layers.Layer], out: Path) -> Path:
    """``out`` = the first convolution's kernels (the report draws the same picture)."""
    conv = first_conv(layers)
    return plot_filters(cast(nn.Conv2d, conv.module).weight, conv.name, out)


def explain_filters(run_path: str | Path, options: FiguresOptions) -> Explanation:
    """The first convolution's kernels as an image grid: ``filters.png``."""
    out = options.out
    run = open_explained(run_path)
    layers = probe_run(run)
    conv = first_conv(layers)
    path = filters_figure(run.trained.model, layers, run.out_dir(out) / "filters.png")
    kernels = tuple(cast(nn.Conv2d, conv.module).weight.shape)
    return Explanation(
        [path],
        note=f"{conv.name}: {kernels[0]} filters of {kernels[2]}x{kernels[3]} over {kernels[1]} input channel(s)",
    )


def _layer_outputs(
    model: nn.Module, names: list[str], images: torch.Tensor, run: ExplainedRun
) -> dict[str, torch.Tensor]:
    """The outputs of the named layers for uint8 ``images``, through the run's own input scaling."""
    from cnnlab.models.inference import run_batches

    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    fresh: set[str] = set()  # layers already recorded for this batch (test-time flips run a model twice)

    def new_batch(module: nn.Module, args: object) -> None:
        fresh.clear()

    def keep(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
            if name not in fresh:
                fresh.add(name)
                outputs[name].append(output.detach().float().cpu().clone())

        return hook

    handles = [model.register_forward_pre_hook(new_batch)]
    handles += [model.get_submodule(name).register_forward_hook(keep(name)) for name in names]
    try:
        for _ in run_batches(model, images, run.trained.normalize):
            pass
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(chunks) for name, chunks in outputs.items()}


def explain_feature_maps(run_path: str | Path, inputs: list[str], options: FeatureMapsOptions) -> Explanation:
    """Per image, the most active channels of a few layers early to late: ``feature_maps_<image>.png``."""
    layer_names, out = options.layers, options.out
    run = open_explained(run_path)
    model = run.trained.model
    layers = probe_run(run)
    chosen = (
        [net_layers.find_layer(model, layers, n) for n in layer_names]
        if layer_names
        else net_layers.spread_stages(model, layers)
    )
    images = load_images(run, inputs)
    folder, written = run.out_dir(out), []
    names = file_names(images.paths, "feature_maps")
    with net_layers.eager(model) as net:
        for start in range(0, len(images.paths), CHUNK):  # bounded memory for a folder of any size
            chunk = images.images[start : start + CHUNK]
            maps = _layer_outputs(net, [layer.name for layer in chosen], chunk, run)
            for i in range(len(chunk)):
                rows = [(layer.name, maps[layer.name][i]) for layer in chosen]
                path = images.paths[start + i]
                written.append(plot_feature_maps(chunk[i].numpy(), rows, folder / names[start + i], path.name))
    return Explanation(
        written,
        [{"layer": layer.name, "type": layer.kind, "output": "x".join(map(str, layer.shape))} for layer in chosen],
    )


def explain_gradcam(run_path: str | Path, inputs: list[str], options: GradcamOptions) -> Explanation:
    """Per image, where the network looked for the predicted class (or ``--class``): ``<method>_<image>.png``."""
    class_name, method, layer_name, out = options.class_name, options.method, options.layer, options.out
    run = open_explained(run_path)
    wanted = class_index(run, class_name)
    model, names = run.trained.model, run.trained.class_names
    layers = probe_run(run)
    layer = net_layers.find_layer(model, layers, layer_name) if layer_name else net_layers.gradcam_layer(model, layers)
    images = load_images(run, inputs)
    with cam_session(model, layer.name, run.trained.normalize, method) as explain:
        maps = explain(images.images, None if wanted is None else [wanted] * len(images.images))
    title = f"{method}: {layer.name} of {run.model_name}"
    folder, written, rows = run.out_dir(out), [], []
    scale = EIGENCAM_SCALE if method == "eigencam" else CAM_SCALE
    for i, name in enumerate(file_names(images.paths, method.replace("++", "pp"))):
        panel = _cam_panel(images, maps, i, names)
        written.append(plot_gradcam([panel], folder / name, title, 1, 3.0, scale))
        rows.append(
            {
                "image": str(images.paths[i]),
                "predicted": panel.predicted,
                "probability": panel.probability,
                "true": panel.true or "",
                "explained": panel.explained,
                "evidence": panel.evidence,
                "figure": str(written[-1]),
            }
        )
    shows = (
        "the layer's main activation pattern (class-agnostic)"
        if method == "eigencam"
        else "red = where the evidence for the class is"
    )
    note = f"heat map of layer {layer.name} ({'x'.join(map(str, layer.shape))}): {shows}"
    flat = [row for row in rows if not row["evidence"]]
    if flat:
        _warn_flat(flat, len(rows))
        note += f"; {len(flat)} of {len(rows)} map(s) flat: their photo holds no evidence for the class"
    return Explanation(written, rows, note=note)


def _cam_panel(images: UserImages, maps: Heatmaps, i: int, names: list[str]) -> CamPanel:
    """Image ``i`` with its heat map, what the model predicted, and the class the map explains."""
    probs = maps.probs[i]
    predicted = int(probs.argmax())
    true = images.true[i]
    return CamPanel(
        images.images[i].numpy(),
        maps.heat[i],
        images.paths[i].name,
        names[predicted],
        float(probs[predicted]),
        names[maps.target[i]],
        None if true is None else names[true],
        float(probs[maps.target[i]]),
        not maps.no_evidence(i),
    )


def _warn_flat(flat: list[dict[str, Any]], total: int, listed: int = 3) -> None:
    """Says which maps are flat: one line per image for a few, one line with the count for many."""
    if len(flat) <= listed:
        for row in flat:
            log.warning("%s: %s", Path(row["image"]).name, no_evidence_text(row["explained"]))
        return
    classes = sorted({row["explained"] for row in flat})
    which = f"'{classes[0]}'" if len(classes) == 1 else "the class of their map"
    names = ", ".join(Path(row["image"]).name for row in flat[:listed])
    log.warning(
        "no evidence for %s in %d of %d photos (%s and %d more): nothing in them raised the class's "
        "score, so their Grad-CAM maps are flat (all blue); the evidence column lists them",
        which,
        len(flat),
        total,
        names,
        len(flat) - listed,
    )


def explain_receptive_field(run_path: str | Path, options: FiguresOptions) -> Explanation:
    """Per convolution/pooling layer: output size, jump and receptive field; ``receptive_field.csv`` and ``.png``."""
    out = options.out
    run = open_explained(run_path)
    side = run.trained.preprocess.side
    rows = receptive_fields(run.trained.model, run.trained.preprocess.channels, side)
    table = table_rows(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    folder = run.out_dir(out)
    csv_path = folder / "receptive_field.csv"
    atomic_write_text(csv_path, buffer.getvalue())
    png = plot_receptive_fields(rows, side, folder / "receptive_field.png", run.model_name)
    last = rows[-1]
    covers = "more than the whole image" if max(last.field) > side else f"{max(last.field)} of {side} px"
    return Explanation(
        [csv_path, png],
        table,
        note=f"input {side}x{side} px; the last layer ({last.name}) sees "
        f"{max(last.field)} px ({covers}), one output every "
        f"{max(last.jump)} px",
    )
