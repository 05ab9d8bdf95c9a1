"""``cnnlab prune``: a pruned copy of a run's model as a run of its own, with a before/after table.

The pruned model lives in ``RUN/pruned/<structured|unstructured>-<percent>/``, a complete run
folder, so ``evaluate``, ``predict``, ``export``, ``quantize`` and ``benchmark`` take it like any
run. Its weights are plain tensors (``pruned.safetensors``, then fine-tuning's checkpoints) and
its layer widths are data (``architecture.json``): nothing in it is unpickled.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.deploy.benchmark import ROUNDS, normalized, sample, time_models, weights_mb
from cnnlab.deploy.pruning import (
    KeepZeros,
    channels,
    count_macs,
    nonzero_parameters,
    prune_channels,
    prune_weights,
    recalibrate_batchnorm,
    weight_sparsity,
)
from cnnlab.deploy.runtime import open_runtime, torch_threads
from cnnlab.deploy.settings import DEFAULT_THREADS
from cnnlab.errors import CnnlabError, plural
from cnnlab.evaluation.evaluator import evaluate_split
from cnnlab.evaluation.report import write_report
from cnnlab.evaluation.run import finish_run, run_data
from cnnlab.models import own_model_names, resolve_name
from cnnlab.models.inference import accuracy
from cnnlab.models.summary import model_summary
from cnnlab.tables import Table
from cnnlab.training.architecture import write_architecture
from cnnlab.training.build import build_model
from cnnlab.training.checkpoint import load_trained
from cnnlab.training.fit import train_run
from cnnlab.training.hooks import TrainingHooks
from cnnlab.training.run_dir import RunFiles, open_run, read_run_config, update_meta, write_meta
from cnnlab.training.start import open_new_run

log = logging.getLogger("cnnlab")
RECALIBRATION_IMAGES = 512  # training images that re-estimate BatchNorm statistics after pruning


@dataclass
class Pruned:
    """The pruned run folder and its before/after table."""

    files: RunFiles
    table: Table


def _child_config(config: Any, files: RunFiles, kind: str, sparsity: float, trained: Any,
                  epochs: int, lr: float | None) -> Any:
    """The pruned run's config: the parent's, built from scratch at the parent's input size (the
    weights come from the pruned file), one full stage of fine-tuning."""
    return dataclasses.replace(
        config, name=f"{kind}-{round(100 * sparsity)}", runs_dir=str(files.pruned),
        model=dataclasses.replace(config.model, pretrained=False, weights=None),
        data=dataclasses.replace(config.data, image_size=trained.side, channels=trained.channels,
                                 crop_pct=trained.crop_pct),
        train=dataclasses.replace(config.train, epochs=max(1, epochs), lr=lr or config.train.lr, time_budget=None),
        transfer=dataclasses.replace(config.transfer, stages="full"))


def _row(label: str, model: torch.nn.Module, example: torch.Tensor, sparsity: str, acc: float,
         timing: Any | None) -> list[str]:
    macs = count_macs(model, example)
    speed = [f"{timing.p50_ms:.2f}", f"{timing.throughput:.0f}"] if timing else ["—", "—"]
    return [label, sparsity, f"{nonzero_parameters(model):,}", f"{macs / 1e6:.2f}M", f"{weights_mb(model):.2f}",
            *speed, f"{100 * acc:.2f}%"]


def _compare(files: RunFiles, trained: Any, child: RunFiles, pruned: torch.nn.Module, data: Any, info: dict[str, Any],
             threads: int, rounds: int) -> Table:
    """The before/after table: the original, the pruned model before fine-tuning (if it was
    fine-tuned), and the pruned run as every command reloads it."""
    final = load_trained(child)  # what every other command will load: proves the files reopen
    test = data.splits["test"]
    example = normalized(data.splits["train"].images, trained.normalize, 1)
    kind, epochs = info["kind"], info["finetune_epochs"]
    what = f"{info['achieved']:.0%} " + ("of channels" if kind == "structured" else "of weights")
    with torch_threads(threads):
        eager = {"original": open_runtime(files, "pytorch", threads, trained).model,
                 "pruned": open_runtime(child, "pytorch", threads, final).model}
        timings = time_models({k: (m, normalized(test.images, trained.normalize)) for k, m in eager.items()}, rounds)
        original_acc = accuracy(trained.model, test.images, test.labels, trained.normalize)
        final_acc = accuracy(final.model, test.images, test.labels, final.normalize)
        rows = [_row("original", trained.model, example, "0%", original_acc, timings["original"])]
        if epochs:
            rows.append(_row(f"pruned {kind}, before fine-tuning", pruned, example, what,
                             info["accuracy_before_finetune"], None))
        label = f"pruned {kind}" + (f" + {plural(epochs, 'epoch')} of fine-tuning" if epochs else "")
        rows.append(_row(label, final.model, example, what, final_acc, timings["pruned"]))
    speedup = timings["original"].p50_ms / timings["pruned"].p50_ms
    notes = [(f"batch-1 latency and batch-32 throughput in PyTorch eager, "
              f"{plural(threads, 'thread')}, interleaved; accuracy on {len(test)} test images"),
             f"speed-up at batch 1: {speedup:.2f}x",
             f"pruned run: {child.root} (evaluate, predict, export, quantize and benchmark take it)"]
    if kind == "unstructured":
        notes.append("unstructured pruning only zeroes weights: the tensors keep their shapes, so dense kernels "
                     "take as long as before (use --structured to make the network smaller and faster)")
    if not epochs and final_acc < original_acc - 0.02:
        notes.append("pruned without fine-tuning: accuracy usually collapses; add --finetune-epochs 3")
    return Table(f"{kind.capitalize()} pruning of {files.root.name} ({info['requested']:.0%} "
                 f"{'of channels' if kind == 'structured' else 'of weights'})",
                 ["model", "sparsity", "non-zero params", "MACs", "size MB", "batch 1 p50 ms", "batch 32 img/s",
                  "test accuracy"], rows, notes, {**info, "speedup_batch1": speedup, "final_accuracy": final_acc})


def prune_run(run: str | Path, sparsity: float, structured: bool = True, finetune_epochs: int = 0,
              finetune_lr: float | None = None, threads: int = DEFAULT_THREADS, command: str = "cnnlab prune",
              rounds: int = ROUNDS) -> Pruned:
    """Prunes ``sparsity`` of the run's channels (or weights), optionally fine-tunes, and compares.

    Raises:
        CnnlabError: a sparsity outside (0, 1), or a run without a checkpoint.
    """
    if not 0 < sparsity < 1:
        raise CnnlabError(f"--sparsity must be between 0 and 1 (exclusive), got {sparsity:g}; e.g. 0.5")
    if finetune_epochs < 0:
        raise CnnlabError(f"--finetune-epochs must be at least 0, got {finetune_epochs}")
    files = open_run(run)
    trained = load_trained(files)
    config = read_run_config(files)
    data = run_data(files, trained)
    test = data.splits["test"]
    example = normalized(data.splits["train"].images, trained.normalize, 1)  # traced for coupled channels
    # Plain layout: torch's pruning flattens weights with .view, which NHWC weights refuse.
    model = copy.deepcopy(trained.model).to(memory_format=torch.contiguous_format)
    kind = "structured" if structured else "unstructured"
    masks = []
    with torch_threads(max(threads, torch.get_num_threads())):
        if structured:
            own = resolve_name(config.model.name) in own_model_names()
            prune_channels(model, example, sparsity, round_to=None if own else 8)
        else:
            masks = prune_weights(model, sparsity)
        train = sample(data.splits["train"].images, RECALIBRATION_IMAGES)
        recalibrate_batchnorm(model, [normalized(train[i : i + 32], trained.normalize)
                                      for i in range(0, len(train), 32)])
    model.eval()
    child_config = _child_config(config, files, kind, sparsity, trained, finetune_epochs,
                                 finetune_lr)
    summary = model_summary(model, (trained.channels, trained.side, trained.side))
    ctx = open_new_run(child_config, command, data, trained.meta["preprocess"], model, summary)
    child = ctx.files
    original = build_model(child_config, data.num_classes, trained.meta["preprocess"])
    resized = write_architecture(child.architecture, original, model, {"pruned_from": str(files.root)})
    if not resized:
        child.architecture.unlink()  # same shapes as the config builds: nothing to describe
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(child.pruned_weights))
    before_finetune = accuracy(model, test.images, test.labels, trained.normalize)
    achieved = (1 - channels(model) / channels(trained.model)) if structured else weight_sparsity(model)
    info = {"from": str(files.root), "kind": kind, "requested": sparsity, "achieved": achieved,
            "finetune_epochs": finetune_epochs, "accuracy_before_finetune": before_finetune}
    ctx.meta["pruning"] = info
    tuned = f", then fine-tuned for {plural(finetune_epochs, 'epoch')}" if finetune_epochs else ", not fine-tuned"
    ctx.meta.setdefault("notes", []).append(
        f"A pruned copy of run {files.root.name}: {kind}, {achieved:.0%} "
        f"{'of channels' if structured else 'of weights'} removed{tuned} (before/after table under Deployment).")
    write_meta(child, ctx.meta)
    if finetune_epochs:
        ctx.hooks = TrainingHooks(callbacks=[KeepZeros(masks)] if masks else [])
        finish_run(train_run(ctx))
    else:
        evaluate_split(model, trained.normalize, test, data.class_names, child)
        update_meta(child, status="completed")
    table = _compare(files, trained, child, model, data, info, threads, rounds)
    table.save(child.tables, "prune")
    write_report(child.root)
    return Pruned(child, table)
