"""``cnnlab prune``: a pruned copy of a run's model as a run of its own, with a before/after table.

The pruned model lives in ``RUN/pruned/<structured|unstructured>-<percent>/``, a complete run
folder, so ``evaluate``, ``predict``, ``export``, ``quantize`` and ``benchmark`` take it like any
run. Its weights are plain tensors (``pruned.safetensors``, then fine-tuning's checkpoints) and
its layer widths are data (``architecture.json``): nothing in it is unpickled.

After pruning, the layers that lost inputs are refitted to the parent's outputs (or, where one
cannot be, the BatchNorm statistics are re-estimated), and the whole network fine-tunes until
validation accuracy is back to the parent's (``RecoveryStop``), stops improving, or the epoch / time
budget is spent; the epoch with the best validation accuracy is kept if it beats the copy as pruned
on validation, else the copy is. A refitted copy fine-tunes as transfer's stage 2 does: BatchNorm
statistics fixed, at the stage-2 rate (``finetune_lr``). ``--max-drop`` bisects a grid of sparsities
for the largest one within that drop on validation. A result that loses more than the drop, or is no
faster than its parent, says so in the console, run.json and both reports (the parent's Deployment
section lists its pruned copies).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch

from cnnlab.config import RunConfig
from cnnlab.data.types import PreparedData
from cnnlab.deploy.benchmark import ROUNDS, normalized, time_models, weights_mb
from cnnlab.deploy.prune_network import (
    KeepZeros,
    channels,
    count_macs,
    nonzero_parameters,
    prune_channels,
    prune_weights,
    recalibrate_batchnorm,
    weight_sparsity,
)
from cnnlab.deploy.prune_reconstruct import all_refittable, reconstruct_layers
from cnnlab.deploy.prune_sweep import sweep_sparsities
from cnnlab.deploy.runtime import open_runtime, torch_threads
from cnnlab.deploy.settings import (
    FINETUNE_BATCH,
    FINETUNE_BUDGET,
    FINETUNE_EPOCHS,
    FINETUNE_PATIENCE,
    MAX_DROP,
    MIN_SPEEDUP,
    PruneOptions,
    PruneRanking,
)
from cnnlab.errors import CnnlabError, plural
from cnnlab.evaluation.evaluator import evaluate_split
from cnnlab.evaluation.report import write_report
from cnnlab.evaluation.run_evaluation import bring_time_up_to_now, finish_run, run_data
from cnnlab.models import own_model_names, resolve_name
from cnnlab.models.inference import accuracy
from cnnlab.models.summary import model_summary
from cnnlab.models.weights import read_state_dict
from cnnlab.phases import phase, recording
from cnnlab.tables import Table
from cnnlab.training.architecture import write_architecture
from cnnlab.training.build import build_model
from cnnlab.training.checkpoint import TrainedModel, load_trained, replace_model_weights
from cnnlab.training.hooks import TrainingHooks
from cnnlab.training.run_dir import RunFiles, open_run, read_record, read_run_config, write_record
from cnnlab.training.run_fit import FitResult, train_run
from cnnlab.training.stage_plan import FrozenBatchNormEval
from cnnlab.training.start import open_new_run

log = logging.getLogger("cnnlab")
RECALIBRATION_IMAGES = 512  # training images that re-estimate BatchNorm statistics after pruning
RECONSTRUCTION_IMAGES = 256  # training images that choose channels (Taylor) and refit layers: 8 batches


@dataclass
class Pruned:
    """The pruned run folder, its before/after table, what went wrong, and the sweep (``--max-drop``)."""

    files: RunFiles
    table: Table
    warnings: list[str] = dataclasses.field(default_factory=list)
    sweep: Table | None = None


@dataclass
class Parent:
    """The run being pruned, loaded once: its model, options, data and validation / test accuracy."""

    files: RunFiles
    trained: TrainedModel
    config: RunConfig
    data: PreparedData
    val_accuracy: float
    test_accuracy: float

    @property
    def example(self) -> torch.Tensor:
        """One normalised training image: traced to find coupled channels, and to count MACs."""
        return normalized(self.data.splits["train"].images, self.trained.normalize, 1)


@dataclass
class PrunedCopy:
    """The parent's network with channels (or weights) removed, before any fine-tuning."""

    model: torch.nn.Module
    masks: list  # unstructured: each layer's kept weights (fine-tuning keeps the zeros at zero)
    refitted: bool  # layers refitted to the parent's outputs through its BatchNorm statistics


@dataclass(frozen=True)
class FineTuning:
    """How a pruned model is fine-tuned: at most ``epochs`` epochs and ``budget`` seconds, at ``lr``."""

    epochs: int = FINETUNE_EPOCHS
    budget: float | None = FINETUNE_BUDGET
    lr: float | None = None  # None: finetune_lr() chooses


class RecoveryStop(L.Callback):
    """Stops fine-tuning once validation accuracy is back to ``target`` (the parent's, less one image).

    Training further on a small set only risks overfitting it; the epoch kept is still the one with
    the best validation accuracy (the stage selects by accuracy), so stopping never loses it.
    """

    def __init__(self, target: float) -> None:
        self.target = target
        self.recovered_at: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get("val_acc")
        if trainer.sanity_checking or value is None or self.recovered_at is not None:
            return
        if float(value) >= self.target - 1e-9:
            self.recovered_at = trainer.current_epoch + 1
            trainer.should_stop = True


def open_parent(run: str | Path) -> Parent:
    """The run to prune with its own data, scored once on validation and test."""
    files = open_run(run)
    trained = load_trained(files)
    data = run_data(files, trained)
    val, test = data.splits.get("val"), data.splits["test"]
    if val is None or len(val) == 0:
        raise CnnlabError(
            f"run '{files.root}' has no validation split: cnnlab prune fine-tunes and chooses on it; "
            "retrain with --val-split auto"
        )
    return Parent(
        files,
        trained,
        read_run_config(files),
        data,
        accuracy(trained.model, val.images, val.labels, trained.normalize),
        accuracy(trained.model, test.images, test.labels, trained.normalize),
    )


def finetune_lr(config: RunConfig, given: float | None, refitted: bool) -> float | Literal["auto"]:
    """The fine-tuning rate: ``given``; else, for a refitted copy, the run's stage-2 rate
    (``--finetune-lr``): its BatchNorm statistics stay fixed, as in transfer's stage 2, and without
    BatchNorm renormalising each batch a higher rate undoes the refit (dtd10 Lite0 at 50%, 72.92%
    before fine-tuning: 18.33% after 4 epochs at 1e-3, 67.50% at 3e-4, 78.33% at 1e-4; with
    training-mode BatchNorm 66.67% at 1e-4 and 74.17% at 1e-3, bench/out/prune.md). Otherwise the run's
    own ``--lr``: chosen when pruning left Lite0 at chance (1e-3 reached 33% validation accuracy on
    dtd10 after one epoch where 1e-4 reached 15%)."""
    if given is not None:
        return given
    return config.transfer.finetune_lr if refitted else config.train.lr  # "auto": the finder picks it


def _child_config(parent: Parent, kind: str, sparsity: float, tuning: FineTuning, refitted: bool) -> RunConfig:
    """The pruned run's config: the parent's, built from scratch at the parent's input size (the
    weights come from the pruned file), one stage in which every layer fine-tunes, in batches of at
    most FINETUNE_BATCH."""
    config, trained = parent.config, parent.trained
    return dataclasses.replace(
        config,
        name=f"{kind}-{round(100 * sparsity)}",
        runs_dir=str(parent.files.pruned),
        model=dataclasses.replace(config.model, pretrained=False, weights=None),
        data=dataclasses.replace(
            config.data,
            image_size=trained.preprocess.side,
            channels=trained.preprocess.channels,
            crop_pct=trained.preprocess.crop_pct,
            crop_mode=trained.preprocess.crop_mode,
            batch_size=min(config.data.batch_size, FINETUNE_BATCH),
        ),
        train=dataclasses.replace(
            config.train,
            epochs=max(1, tuning.epochs),
            lr=finetune_lr(config, tuning.lr, refitted),
            time_budget=tuning.budget,
            patience=FINETUNE_PATIENCE,
        ),
        transfer=dataclasses.replace(config.transfer, stages="full"),
    )


def _pruned_model(
    parent: Parent, sparsity: float, structured: bool, threads: int, ranking: PruneRanking = "global"
) -> PrunedCopy:
    """A pruned copy of the parent's network. Structured: channels chosen by Taylor importance on
    labelled training images, the residual stream kept whole, then the layers that lost inputs
    refitted to the parent's outputs (prune_reconstruct.py); BatchNorm statistics are re-estimated
    where a layer could not be refitted."""
    # Plain layout: torch's pruning flattens weights with .view, which NHWC weights refuse.
    model = copy.deepcopy(parent.trained.model).to(memory_format=torch.contiguous_format)
    masks = []
    normalize, train = parent.trained.normalize, parent.data.splits["train"]
    order = torch.randperm(len(train.images), generator=torch.Generator().manual_seed(0))
    images, labels = (
        train.images[order[:RECALIBRATION_IMAGES]],
        torch.as_tensor(train.labels)[order[:RECALIBRATION_IMAGES]],
    )
    batches = [normalized(images[i : i + 32], normalize) for i in range(0, len(images), 32)]
    refitted = True
    with torch_threads(max(threads, torch.get_num_threads())):
        if structured:
            own = resolve_name(parent.config.model.name) in own_model_names()
            fitting = batches[: RECONSTRUCTION_IMAGES // 32]
            labelled = list(zip(fitting, labels.split(32)))
            removed = prune_channels(model, parent.example, sparsity, None if own else 8, labelled, ranking=ranking)
            refitted = all_refittable(model, removed)
        else:
            masks = prune_weights(model, sparsity)
            refitted = False
        if not refitted:
            recalibrate_batchnorm(model, batches)
        if structured:
            original = copy.deepcopy(parent.trained.model).to(memory_format=torch.contiguous_format).eval()
            reconstruct_layers(model, original, removed, fitting)
    model.eval()
    return PrunedCopy(model, masks, refitted)


def _new_child(parent: Parent, pruned: PrunedCopy, kind: str, sparsity: float, tuning: FineTuning, command: str) -> Any:
    """The pruned run's folder: config, pruned weights, layer widths; returns its training context."""
    trained, model = parent.trained, pruned.model
    child_config = _child_config(parent, kind, sparsity, tuning, pruned.refitted)
    summary = model_summary(model, (trained.preprocess.channels, *trained.preprocess.size))
    ctx = open_new_run(child_config, command, parent.data, trained.preprocess, model, summary)
    original = build_model(child_config, parent.data.num_classes, trained.preprocess)
    resized = write_architecture(ctx.files.architecture, original, model, {"pruned_from": str(parent.files.root)})
    if not resized:
        ctx.files.architecture.unlink()  # same shapes as the config builds: nothing to describe
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(ctx.files.pruned_weights))
    return ctx


def _fine_tune(ctx: Any, parent: Parent, pruned: PrunedCopy, info: dict[str, Any]) -> None:
    """Fine-tunes the pruned run through cnnlab's trainer, selecting its epoch by validation accuracy,
    and keeps the copy as pruned when no epoch beat it on validation (``_keep_the_start``).
    A refitted copy keeps its BatchNorm statistics (``FrozenBatchNormEval``): the refit matched the
    parent's outputs through them, and training-mode BatchNorm would normalise with each batch's."""
    val = parent.data.splits["val"]
    recovery = RecoveryStop(parent.val_accuracy - 1 / len(val))
    callbacks: list[L.Callback] = [recovery]
    if pruned.masks:
        callbacks.append(KeepZeros(pruned.masks))
    if pruned.refitted:
        callbacks.append(FrozenBatchNormEval(include_trainable=True))
    ctx.hooks = TrainingHooks(callbacks=callbacks, select="accuracy")
    result = train_run(ctx)
    kept_start = _keep_the_start(result, info["val_accuracy_before_finetune"])
    finish_run(result)
    stages = ctx.record.stages
    info.update(
        finetune_epochs=stages[-1].epochs if stages else None,
        finetune_seconds=stages[-1].seconds if stages else None,
        recovered_at_epoch=recovery.recovered_at,
        finetune_kept=not kept_start,
    )


def _keep_the_start(result: FitResult, start_accuracy: float) -> bool:
    """Puts the copy as pruned back (model and best.ckpt) when fine-tuning's best epoch is below it on
    validation, as transfer's stage 2 never replaces a better stage 1: at too high a rate a refitted
    Lite0 copy fell from 79 to 21 of 100 validation photos. Returns whether it did."""
    stages = result.record.stages
    best = stages[-1].val_at_best if stages else None
    if best is None or best.accuracy is None or best.accuracy >= start_accuracy - 1e-9:
        return False
    start = read_state_dict(result.files.pruned_weights)
    result.module.model.load_state_dict(start)
    replace_model_weights(result.files.best, start)
    # On record as a stage whose weights were not kept (the report's stage table says so), and no
    # validation loss for best.ckpt: the copy's was not measured.
    stages[-1].replaced_best, stages[-1].best_val_loss = False, None
    result.record.notes.append(
        f"Fine-tuning never beat the pruned copy on validation ({best.accuracy:.2%} at best, epoch "
        f"{best.epoch}, against {start_accuracy:.2%}): the copy as pruned is kept."
    )
    return True


@recording()  # the pruned run's own time: pruning ("model"), fine-tuning, evaluation, figures
def prune_once(
    parent: Parent,
    sparsity: float,
    structured: bool,
    tuning: FineTuning,
    threads: int,
    command: str,
    rounds: int = ROUNDS,
    max_drop: float = MAX_DROP,
    ranking: PruneRanking = "global",
) -> Pruned:
    """Prunes ``sparsity`` of the parent's channels (or weights), fine-tunes, and measures the result
    beside the parent. Its table and what went wrong (``verdict``) are saved in the pruned run
    (tables, run.json, report), not printed: the caller says what matters."""
    kind = "structured" if structured else "unstructured"
    with phase("model"):
        pruned = _pruned_model(parent, sparsity, structured, threads, ranking)
    model = pruned.model
    ctx = _new_child(parent, pruned, kind, sparsity, tuning, command)
    child = ctx.files
    val, test = parent.data.splits["val"], parent.data.splits["test"]
    normalize = parent.trained.normalize
    achieved = (1 - channels(model) / channels(parent.trained.model)) if structured else weight_sparsity(model)
    info = {
        "from": str(parent.files.root),
        "kind": kind,
        "requested": sparsity,
        "achieved": achieved,
        "ranking": ranking if structured else None,
        "refitted": pruned.refitted,
        "finetune_epochs": 0,
        "finetune_lr": ctx.config.train.lr if tuning.epochs else None,
        "finetune_budget": tuning.budget if tuning.epochs else None,
        "accuracy_before_finetune": accuracy(model, test.images, test.labels, normalize),
        "val_accuracy_before_finetune": accuracy(model, val.images, val.labels, normalize),
    }
    ctx.record.pruning = info
    what = "of channels" if structured else "of weights"
    ctx.record.notes.append(
        f"A pruned copy of run {parent.files.root.name}: {kind}, {achieved:.0%} "
        f"{what} removed (before/after table under Deployment)."
    )
    write_record(child, ctx.record)
    if tuning.epochs:
        _fine_tune(ctx, parent, pruned, info)
    else:
        evaluate_split(model, normalize, test, parent.data.class_names, child)
        run = read_record(child)
        run.status = "completed"
        write_record(child, run)
    return _judged(parent, child, model, info, threads, rounds, max_drop)


def _judged(
    parent: Parent,
    child: RunFiles,
    model: torch.nn.Module,
    info: dict[str, Any],
    threads: int,
    rounds: int,
    max_drop: float,
) -> Pruned:
    """The pruned run measured beside its parent, what went wrong (``verdict``), both on its record."""
    table = _compare(parent, child, model, info, threads, rounds)
    warnings = verdict(table.data, max_drop)
    table.notes[:0] = [f"WARNING: {w}" for w in warnings]
    table.data.update(warnings=warnings, max_drop=max_drop)
    table.save(child.tables, "prune")
    run = read_record(child)
    run.pruning = table.data
    run.notes += [f"{w[0].upper()}{w[1:]}." for w in warnings]
    bring_time_up_to_now(run)  # the comparison's timing too
    write_record(child, run)
    write_report(child.root)
    return Pruned(child, table, warnings)


MEASURED = (
    "parent_params",
    "params",
    "parent_val_accuracy",
    "val_accuracy",
    "parent_test_accuracy",
    "final_accuracy",
    "parent_ms",
    "pruned_ms",
    "speedup_batch1",
)  # also in the pruned run's run.json


def _row(
    label: str,
    model: torch.nn.Module,
    example: torch.Tensor,
    sparsity: str,
    val_acc: float,
    acc: float,
    timing: Any | None,
) -> list[str]:
    macs = count_macs(model, example)
    speed = [f"{timing.p50_ms:.2f}", f"{timing.throughput:.0f}"] if timing else ["—", "—"]
    return [
        label,
        sparsity,
        f"{nonzero_parameters(model):,}",
        f"{macs / 1e6:.2f}M",
        f"{weights_mb(model):.2f}",
        *speed,
        f"{100 * val_acc:.2f}%",
        f"{100 * acc:.2f}%",
    ]


COMPARE_COLUMNS = [
    "model",
    "sparsity",
    "non-zero params",
    "MACs",
    "size MB",
    "batch 1 p50 ms",
    "batch 32 img/s",
    "val accuracy",
    "test accuracy",
]


def _compare(
    parent: Parent, child: RunFiles, pruned: torch.nn.Module, info: dict[str, Any], threads: int, rounds: int
) -> Table:
    """The before/after table: the original, the pruned model before fine-tuning (if it was
    fine-tuned), and the pruned run as every command reloads it, timed side by side."""
    files, trained = parent.files, parent.trained
    final = load_trained(child)  # what every other command will load: proves the files reopen
    val, test = parent.data.splits["val"], parent.data.splits["test"]
    with torch_threads(threads):
        threads = torch.get_num_threads()
        eager = {
            "original": open_runtime(files, "pytorch", threads, trained).model,
            "pruned": open_runtime(child, "pytorch", threads, final).model,
        }
        timings = time_models({k: (m, normalized(test.images, trained.normalize)) for k, m in eager.items()}, rounds)
        val_acc = accuracy(final.model, val.images, val.labels, final.normalize)
        final_acc = accuracy(final.model, test.images, test.labels, final.normalize)
        rows = _compare_rows(parent, pruned, final.model, info, timings, (val_acc, final_acc))
    speedup = timings["original"].p50_ms / timings["pruned"].p50_ms
    data = {
        **info,
        "parent_params": nonzero_parameters(trained.model),
        "params": nonzero_parameters(final.model),
        "parent_val_accuracy": parent.val_accuracy,
        "val_accuracy": val_acc,
        "parent_test_accuracy": parent.test_accuracy,
        "final_accuracy": final_acc,
        "parent_ms": timings["original"].p50_ms,
        "pruned_ms": timings["pruned"].p50_ms,
        "speedup_batch1": speedup,
        "threads": threads,
    }
    kind = info["kind"]
    title = (
        f"{kind.capitalize()} pruning of {files.root.name} ({info['requested']:.0%} "
        f"{'of channels' if kind == 'structured' else 'of weights'})"
    )
    notes = _compare_notes(info, child, threads, (len(val), len(test)), speedup)
    return Table(title, COMPARE_COLUMNS, rows, notes, data)


def _compare_rows(
    parent: Parent,
    pruned: torch.nn.Module,
    final: torch.nn.Module,
    info: dict[str, Any],
    timings: dict[str, Any],
    accuracies: tuple[float, float],
) -> list[list[str]]:
    """The original; the pruned model before fine-tuning, when it was fine-tuned; the pruned run."""
    kind, epochs, example = info["kind"], info["finetune_epochs"], parent.example
    what = f"{info['achieved']:.0%} " + ("of channels" if kind == "structured" else "of weights")
    rows = [
        _row(
            "original",
            parent.trained.model,
            example,
            "0%",
            parent.val_accuracy,
            parent.test_accuracy,
            timings["original"],
        )
    ]
    if epochs:
        rows.append(
            _row(
                f"pruned {kind}, before fine-tuning",
                pruned,
                example,
                what,
                info["val_accuracy_before_finetune"],
                info["accuracy_before_finetune"],
                None,
            )
        )
    label = f"pruned {kind}" + (f" + {plural(epochs, 'epoch')} of fine-tuning" if epochs else "")
    if info.get("finetune_kept") is False:
        label = f"pruned {kind} (fine-tuning kept nothing)"
    rows.append(_row(label, final, example, what, *accuracies, timings["pruned"]))
    return rows


RANKING_NOTES = {
    "global": "channels ranked across the whole network by their effect on the loss: each layer kept what "
    "it needs (--ranking layer: the same share of every layer)",
    "layer": "the same share of every layer's channels removed (--ranking layer; the default, global, ranks "
    "them across the network)",
}


def _compare_notes(
    info: dict[str, Any], child: RunFiles, threads: int, images: tuple[int, int], speedup: float
) -> list[str]:
    """How the table was measured, the speed-up, where the pruned run is, and why fine-tuning stopped."""
    notes = [
        (
            f"batch-1 latency and batch-32 throughput in PyTorch eager, {plural(threads, 'thread')}, "
            f"interleaved; accuracy on {images[0]} validation and {images[1]} test images"
        ),
        f"speed-up at batch 1: {speedup:.2f}x",
        f"pruned run: {child.root} (evaluate, predict, export, quantize and benchmark take it)",
    ]
    if info.get("ranking"):
        notes.append(RANKING_NOTES[info["ranking"]])
    if info.get("refitted"):
        notes.append(
            f"the layers that lost inputs were refitted to the original's outputs on {RECONSTRUCTION_IMAGES} "
            "training images"
            + (
                f"; fine-tuned at lr {info['finetune_lr']:g} with BatchNorm statistics kept fixed"
                if info["finetune_epochs"] and isinstance(info["finetune_lr"], int | float)
                else ""
            )
        )
    if info.get("recovered_at_epoch"):
        notes.append(
            f"fine-tuning stopped at epoch {info['recovered_at_epoch']}: validation accuracy was back to the original's"
        )
    if info["kind"] == "unstructured":
        notes.append(
            "unstructured pruning only zeroes weights: the tensors keep their shapes, so dense kernels "
            "take as long as before (use --structured to make the network smaller and faster)"
        )
    return notes


def verdict(data: dict[str, Any], max_drop: float) -> list[str]:
    """What is wrong with a pruned model (one line each, with what to try): more than ``max_drop``
    points of test accuracy lost, or not faster than its parent at batch 1."""
    warnings = []
    drop = 100 * (data["parent_test_accuracy"] - data["final_accuracy"])
    sparsity = f"{data['requested']:g}"
    if drop > max_drop:
        lower = max(0.1, round(data["requested"] - 0.2, 1))
        budget, epochs = data.get("finetune_budget"), data.get("finetune_epochs") or 0
        lr = data.get("finetune_lr")
        if not epochs:
            what = "fine-tune it (leave out --finetune-epochs 0), "
        elif data.get("finetune_kept") is False and isinstance(lr, int | float):
            what = (
                "fine-tuning never beat the pruned copy on validation, so the copy is kept as pruned: "
                f"try --finetune-lr {lr / 10:g}, or "
            )
        elif budget and (data.get("finetune_seconds") or 0) >= 0.9 * budget and not data.get("recovered_at_epoch"):
            what = (
                f"fine-tuning used up its {budget:g} s after {plural(epochs, 'epoch')}: "
                f"give it --finetune-budget {2 * budget:g}, or "
            )
        else:
            what = ""
        warnings.append(
            f"pruning --sparsity {sparsity} lost {drop:.1f} points of test accuracy (more than "
            f"{max_drop:g}): {what}try --sparsity {lower:g}, or --max-drop {max_drop:g} for the largest "
            "sparsity within it"
        )
    if data["speedup_batch1"] < MIN_SPEEDUP:
        how = (
            "--structured removes whole channels"
            if data["kind"] == "unstructured"
            else "try a higher --sparsity, or cnnlab quantize (INT8) on the parent"
        )
        warnings.append(
            f"the pruned model is no faster than its parent ({data['speedup_batch1']:.2f}x at batch 1, "
            f"under {MIN_SPEEDUP:g}x): {how}"
        )
    return warnings


def prune_run(run: str | Path, options: PruneOptions, command: str = "cnnlab prune", rounds: int = ROUNDS) -> Pruned:
    """Prunes the run's model (``sparsity``, or the largest within ``max_drop`` points on validation),
    fine-tunes until validation recovers, and compares. What went wrong (``Pruned.warnings``: more than
    the drop lost, or no faster) is in the table's notes, the pruned run's run.json and both reports;
    the caller says it too (the CLI after the table, ``Run.prune`` as log warnings).

    ``options`` were checked when created (``PruneOptions``), as every front end's are.

    Raises:
        CnnlabError: neither a sparsity nor a drop, or a run without a checkpoint.
    """
    sparsity, max_drop, structured, threads = options.sparsity, options.max_drop, options.structured, options.threads
    ranking = options.ranking
    if sparsity is None and max_drop is None:
        raise CnnlabError("give --sparsity X (e.g. 0.5) or --max-drop POINTS (the largest sparsity within that drop)")
    tuning = FineTuning(options.finetune_epochs, options.finetune_budget, options.finetune_lr)
    parent = open_parent(run)
    drop = MAX_DROP if max_drop is None else max_drop
    if sparsity is not None:
        result = prune_once(parent, sparsity, structured, tuning, threads, command, rounds, drop, ranking)
    else:
        result = sweep_sparsities(
            lambda ratio: prune_once(parent, ratio, structured, tuning, threads, command, rounds, drop, ranking), drop
        )
        write_report(result.files.root)  # now with the sweep's table and curve
    write_report(parent.files.root)  # its Deployment section lists its pruned copies
    return result
