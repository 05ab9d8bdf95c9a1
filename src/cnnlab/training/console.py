"""What a training run prints, in the order a user wants it: data, model, plan, then progress and results.

The run opens with a short header (the split with where each part came from, the classes, what
the model sees, the model, the stages planned); each stage says what trains when it starts and
what it reached when it ends; the command closes with each stage's validation and test result.
The full layer table is in the run folder (``model_summary.txt``): ``--verbose`` (the ``cnnlab``
logger at DEBUG) prints it too, with every epoch's line and each stage's trainable table.
"""

from __future__ import annotations

import logging

from cnnlab.config import RunConfig
from cnnlab.data.preprocess import FITTED, Preprocess
from cnnlab.data.types import PreparedData
from cnnlab.training.record import ModelRecord, RunRecord, StageRecord
from cnnlab.training.stage_plan import Stage

log = logging.getLogger("cnnlab")

SHOWN_CLASSES = 12  # more classes than this are abbreviated, as in the report: the first ones, then how many more
LABEL_WIDTH = 8  # the header's labels ("data", "classes", ...) padded to one column

_WHAT_TRAINS = {
    "head": "the head trains on a frozen backbone",
    "top": "the head and the backbone's top train",
    "all": "every layer trains",
}
_CHANNELS = {1: "grayscale", 3: "RGB"}


def epochs_text(count: int) -> str:
    """'1 epoch', '5 epochs'."""
    return f"{count} epoch{'' if count == 1 else 's'}"


def say(text: str) -> None:
    """Prints one of the run's lines at once (flushed: the lines and Lightning's bar share the terminal)."""
    print(text, flush=True)


def verbose() -> bool:
    """Whether the console shows everything (``cnnlab train --verbose``: the cnnlab logger at DEBUG)."""
    return log.isEnabledFor(logging.DEBUG)


def _labelled(label: str, lines: list[str]) -> list[str]:
    """``label`` before the first line, the others indented under it."""
    pad = " " * LABEL_WIDTH
    return [f"{label:<{LABEL_WIDTH}}{lines[0]}", *(pad + line for line in lines[1:])]


def split_text(data: PreparedData, seed: int) -> str:
    """'860 train / 100 val held out of train / 240 test': the counts, and which splits cnnlab carved."""
    held = [name for name in data.splits if name in data.held_out]
    counts = " / ".join(
        f"{len(image_set):,} {name}" + (" held out of train" if held == [name] else "")
        for name, image_set in data.splits.items()
    )
    if len(held) > 1:
        counts += f" ({' and '.join(held)} held out of the images)"
    return counts + (f", stratified, seed {seed}" if held else "")


def classes_text(data: PreparedData) -> str:
    """The class names (the first few of many) and how many training images each has."""
    names = data.class_names
    shown = ", ".join(names[:SHOWN_CLASSES])
    if len(names) > SHOWN_CLASSES:
        shown += f", … {len(names) - SHOWN_CLASSES} more"
    counts = data.splits["train"].class_counts(data.num_classes)
    low, high = min(counts), max(counts)
    each = f"{low:,} train images each" if low == high else f"{low:,} to {high:,} train images per class"
    return f"{len(names)}: {shown}; {each}"


def input_text(data: PreparedData, preprocess: Preprocess | None) -> str:
    """What the model sees: '224x224 px RGB: the centre 87.5% of images stored at 256 px ...'."""
    height, width = data.input_size
    mode = _CHANNELS.get(data.channels, f"{data.channels} channels")
    if data.crop is None:
        return f"{height}x{width} px {mode} ({preprocess.resize if preprocess else 'resized'})"
    stored = data.image_size[0]
    return (
        f"{height}x{width} px {mode}: images stored at {stored} px ({FITTED[data.crop_mode]}), the centre "
        f"{data.crop_pct:.1%} at evaluation, random crops in training"
    )


def model_text(config: RunConfig, model: ModelRecord) -> str:
    """'efficientnet_lite0 (tf_efficientnet_lite0.in1k): 3,383,818 parameters, pretrained (ImageNet)'."""
    name, resolved = config.model.name, model.resolved
    named = f"{name} ({resolved})" if resolved and resolved != name else name
    if config.model.weights:
        start = f"starts from {config.model.weights}"
    elif config.model.pretrained:
        start = "pretrained (ImageNet weights)"
    else:
        start = "from scratch (random weights)"
    total = model.params_total
    return f"{named}: {total:,} parameters, {start}" if total else f"{named}, {start}"


def _stage_text(stage: Stage, config: RunConfig) -> str:
    what = _WHAT_TRAINS[stage.prepare]
    if stage.prepare == "top":
        transfer = config.transfer
        top = (
            f"last {transfer.finetune_layers} layers"
            if transfer.finetune_layers is not None
            else f"last {transfer.finetune_blocks} blocks"
        )
        what = f"the head and the backbone's {top} train"
    lr = "lr auto (finder)" if stage.lr == "auto" else f"lr {stage.lr:g}"
    schedule = stage.scheduler or config.train.scheduler
    return f"'{stage.name}': {what}, up to {epochs_text(stage.epochs)} at {lr} ({schedule})"


def plan_lines(plan: list[Stage], config: RunConfig, budget_line: str | None) -> list[str]:
    """The stages to run, one line each, then early stopping and the time budget."""
    lines = [f"stage {i} {_stage_text(stage, config)}" for i, stage in enumerate(plan, 1)]
    lines.append(
        f"early stopping after {config.train.patience} epochs without a lower val loss; "
        + (budget_line or "no time budget")
    )
    return lines


def header(
    config: RunConfig,
    data: PreparedData,
    run_record: RunRecord,
    plan: list[Stage],
    *,
    run: str,
    threads: str,
    budget_line: str | None = None,
    resumed_at: str | None = None,
) -> str:
    """The block a run opens with: data, classes, input, model, plan, run folder, threads."""
    lines = [
        *_labelled("data", [f"{data.source}: {split_text(data, config.train.seed)}"]),
        *_labelled("classes", [classes_text(data)]),
        *_labelled("input", [input_text(data, run_record.preprocess)]),
        *_labelled("model", [model_text(config, run_record.model)]),
        *_labelled("plan", plan_lines(plan, config, budget_line)),
        *_labelled(
            "run",
            [run + (f", resumed {resumed_at}" if resumed_at else "") + " (the model's layer table: model_summary.txt)"],
        ),
        *_labelled("threads", [threads]),
    ]
    return "\n".join(lines)


def stage_start(
    stage: Stage, position: int, trainable: int, frozen: int, how: str, lr_text: str, budget_seconds: float | None
) -> str:
    """The line a stage starts with: what trains (how many parameters), on what, how long."""
    budget = f", {budget_seconds:.0f} s of the time budget" if budget_seconds is not None else ""
    return (
        f"\nstage {position} '{stage.name}': {_WHAT_TRAINS[stage.prepare]}{how}; {trainable:,} of "
        f"{trainable + frozen:,} parameters train; {lr_text}, up to {epochs_text(stage.epochs)}{budget}"
    )


def _val_text(record: StageRecord, prefix: str = "") -> str:
    """'val acc 82.0% (82/100), val loss 0.5127 (epoch 37)': the stage's best epoch on validation."""
    best = record.val_at_best
    if best is None:
        return "no validation epoch finished"
    right = best.images - best.errors
    return f"{prefix}val acc {best.accuracy:.1%} ({right}/{best.images}), val loss {best.loss:.4f} (epoch {best.epoch})"


def stage_end(record: StageRecord, position: int, planned_epochs: int, interrupted: bool) -> str:
    """The line a stage ends with: epochs run, why it stopped, its best epoch, its test accuracy if scored."""
    epochs, seconds = record.epochs, record.seconds
    if interrupted:
        why = f"interrupted after {epochs} of {planned_epochs} epochs"
    elif epochs < planned_epochs:
        why = f"{epochs} of {planned_epochs} epochs (stopped early)"
    else:
        why = epochs_text(epochs)
    test = record.test_acc
    scored = f"; test acc {test:.2%}" if test is not None else ""
    return f"stage {position} '{record.name}': {why} in {seconds:.1f} s; {_val_text(record, 'best ')}{scored}"


def _result_line(record: StageRecord, position: int, width: int, kept: str | None, several: bool) -> str:
    name = f"'{record.name}'"
    test = record.test_acc
    if several and kept is not None and kept != record.name and position > 1:
        scored = f"not kept (no better on validation than stage '{kept}'), so not scored on test"
    elif test is None:
        scored = "not scored on test"
    else:
        scored = f"test acc {test:.2%}" + ("" if record.done else " of the weights kept so far (interrupted)")
    mark = "  <- kept" if several and kept == record.name else ""
    return f"stage {position} {name:<{width}} {_val_text(record)}; {scored}{mark}"


def results_lines(run: RunRecord) -> list[str]:
    """Each stage's result on validation and test, which weights were kept, and what fine-tuning gave.

    The improvement line comes only when the last stage finished and its weights were kept; an
    interrupted stage says so, and what the run kept.
    """
    stages = run.stages
    if not stages:
        return []
    last, several = stages[-1], len(stages) > 1
    kept = run.kept.stage if last.done and run.kept is not None else None
    width = max(len(str(s.name)) for s in stages) + 2
    lines = [_result_line(record, i, width, kept, several) for i, record in enumerate(stages, 1)]
    if not last.done:
        after = "; what fine-tuning gives is said when it finishes" if several else ""
        lines.append(
            f"stage '{last.name}' did not finish: the run keeps the best weights saved so far (best.ckpt){after}"
        )
    elif several and kept not in (None, last.name):
        lines.append(f"fine-tuning kept no weights: the model is stage '{kept}''s")
    elif run.improvement:
        lines.append(run.improvement)
    refit = run.refit
    if refit is not None and refit.done and refit.test_acc is not None:  # the final model is the refit's
        validated = refit.validated_test_acc
        before = f" (the model validation chose: {validated:.2%})" if validated is not None else ""
        lines.append(f"{refit.line}: test acc {refit.test_acc:.2%}{before}; the final model")
    return lines


def interruption_text(what: str, stage: Stage, position: int, finished: list[str], resumed: bool) -> str:
    """Where a Ctrl-C outside an epoch stopped the run, and what it kept: for ``TrainingInterrupted.saved``."""
    if finished:
        kept = f"finished stage{'s' if len(finished) > 1 else ''} {', '.join(repr(n) for n in finished)} saved"
    elif resumed:
        kept = "the epochs trained before are saved"
    else:
        kept = "nothing was trained yet, so nothing is lost"
    return f"during {what} of stage {position} '{stage.name}', before its first epoch: {kept}; it is redone on resume"
