"""``cnnlab distill``: a small student trained from a teacher, compared with the same student alone.

Three run folders come out of it, all ordinary runs: the teacher (an existing run, or one trained
here by transfer learning from a pretrained model name), the student trained alone with the same
options and starting weights (its baseline), and the distilled student, whose report holds the
comparison table.

The default student is a pruned copy of the teacher (``cnnlab prune``'s structured pruning),
starting from the teacher's weights: it needs no download, and prune-then-distill recovers the
teacher's accuracy where a small network trained from scratch on a few hundred photos learns
nothing. A student that is neither smaller nor faster than its teacher is refused before any
training, and one that does no better than answering the most common class is reported as failed.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from cnnlab.augment.batch import build_batch_augment
from cnnlab.config import ModelConfig, RunConfig, TrainConfig, TransferConfig, build_config
from cnnlab.data.prepare import prepare_data
from cnnlab.data.preprocess import ModelInput, Preprocess
from cnnlab.data.types import PreparedData
from cnnlab.deploy.benchmark import normalized, sample, time_models, weights_mb
from cnnlab.deploy.distill_step import DistillationModule, FreshBatchNormStats, Teacher
from cnnlab.deploy.runtime import open_runtime, torch_threads
from cnnlab.deploy.settings import FASTER_SHARE, PRUNED_STUDENT, DistillOptions, PruneOptions
from cnnlab.errors import CnnlabError
from cnnlab.evaluation.report import write_report
from cnnlab.evaluation.run_evaluation import finish_run, run_data, train_and_evaluate
from cnnlab.models import resolve_name
from cnnlab.models.summary import count_parameters, model_summary
from cnnlab.phases import recording
from cnnlab.tables import Table
from cnnlab.training.architecture import write_architecture
from cnnlab.training.build import build_model, preprocess_of
from cnnlab.training.checkpoint import TrainedModel, load_trained
from cnnlab.training.hooks import TrainingHooks
from cnnlab.training.run_dir import (
    RunFiles,
    default_name,
    open_run,
    read_optional_json,
    read_record,
    read_run_config,
    write_record,
)
from cnnlab.training.run_fit import train_run
from cnnlab.training.stage_plan import FrozenBatchNormEval
from cnnlab.training.start import open_new_run, prepare_inputs

log = logging.getLogger("cnnlab")
DATA_OPTIONS = ("data", "val_split", "test_split", "batch_size", "workers", "sampler", "seed", "runs_dir")


@dataclass
class Distilled:
    """The three runs and the comparison table (saved in the distilled run)."""

    files: RunFiles
    alone: RunFiles
    teacher: RunFiles
    table: Table
    failures: list[str] = dataclasses.field(default_factory=list)  # students no better than the majority class
    warnings: list[str] = dataclasses.field(default_factory=list)  # e.g. distillation did not beat the student alone


@dataclass
class Student:
    """The student before training: its options, data, starting network and how to name it."""

    config: RunConfig
    label: str  # e.g. "efficientnet_lite0 with 50% of its channels pruned"
    data: PreparedData
    preprocess: Preprocess
    model: nn.Module  # starting weights; each run trains a copy, so alone and distilled start alike
    summary: str
    name: str  # its runs are <name>-distilled and <name>-alone unless --name is given
    pruned: RunFiles | None = None  # the pruned copy's own run (its accuracy before distillation)
    # A pruned copy whose layers were refitted to the teacher's outputs through the teacher's BatchNorm
    # statistics: it trains with them fixed (prune_run.finetune_lr says why, and at which rate).
    fixed_statistics: bool = False


@contextlib.contextmanager
def flag_named(flag: str) -> Iterator[None]:
    """The model layer's messages name ``--model``; here that model was given as ``flag``."""
    try:
        yield
    except CnnlabError as exc:
        raise CnnlabError(str(exc).replace("--model", flag)) from None


def teacher_run(teacher: str, options: dict[str, Any], command: str) -> RunFiles:
    """The teacher's run folder: the one given, or a transfer run of the pretrained model named."""
    path = Path(teacher).expanduser()
    if path.is_dir():
        return open_run(path)
    if "/" in teacher or "\\" in teacher:
        raise CnnlabError(f"teacher run folder '{teacher}' not found; give a run folder or a model name")
    with flag_named("--teacher"):
        resolve_name(teacher)  # an unknown name fails here, with close matches
    if not options.get("data"):
        raise CnnlabError(f"--teacher {teacher} is a model name: give DATA to train it on first")
    given = {k: v for k, v in options.items() if k in DATA_OPTIONS}
    config = build_config(**given, model=teacher, pretrained=True)
    config = dataclasses.replace(config, name=f"{default_name(config)}-teacher")
    print(f"training the teacher {teacher} (pretrained) on {options['data']} first")
    with flag_named("--teacher"):
        files, _ = train_and_evaluate(config, f"{command} (teacher)")
    return files


def student_config(
    teacher_files: RunFiles,
    options: dict[str, Any],
    setups: tuple[str | None, ...],
    pruned_from: TrainedModel | None = None,
) -> RunConfig:
    """The teacher's data and split (so its test images stay unseen), then the student's options.

    A pruned copy of the teacher keeps the teacher's architecture and input (size, channels,
    crop), since its weights were learnt on them, and trains whole (no frozen stage).
    """
    taught = read_run_config(teacher_files)
    data = dataclasses.replace(taught.data, image_size=None, channels=None)  # the student's own input
    model, transfer = ModelConfig(), TransferConfig()
    if pruned_from is not None:
        wanted = pruned_from.preprocess
        data = dataclasses.replace(
            taught.data,
            image_size=wanted.side,
            channels=wanted.channels,
            crop_pct=wanted.crop_pct,
            crop_mode=wanted.crop_mode,
        )
        model = dataclasses.replace(taught.model, pretrained=False, weights=None)
        transfer = dataclasses.replace(transfer, stages="full")
    base = RunConfig(
        data=data,
        model=model,
        transfer=transfer,
        train=dataclasses.replace(TrainConfig(), seed=taught.train.seed),
        runs_dir=str(teacher_files.root.parent),
    )
    recipe, config_file, augment = setups
    config = build_config(recipe, config_file, augment, base=base, **options)
    if config.augment.mixup > 0 or config.augment.cutmix > 0:
        raise CnnlabError(
            "--mixup/--cutmix cannot be combined with distillation (the teacher would need the mixed images); drop them"
        )
    return config


def _check_classes(data: PreparedData, teacher: TrainedModel) -> None:
    if data.class_names != teacher.class_names:
        raise CnnlabError(
            f"the teacher knows classes {teacher.class_names[:5]}..., the data has "
            f"{data.class_names[:5]}...: distill on the data the teacher was trained on"
        )


def named_student(
    teacher_files: RunFiles, teacher: TrainedModel, options: dict[str, Any], setups: tuple[str | None, ...]
) -> Student:
    """A student network by name (``--student simple_cnn``), built as ``cnnlab train`` would."""
    config = student_config(teacher_files, options, setups)
    with flag_named("--student"):
        data, preprocess, model, summary = prepare_inputs(config)
    _check_classes(data, teacher)
    return Student(config, config.model.name, data, preprocess, model, summary, default_name(config))


def pruned_student(
    teacher_files: RunFiles,
    teacher: TrainedModel,
    options: dict[str, Any],
    setups: tuple[str | None, ...],
    sparsity: float,
    threads: int,
    command: str,
) -> Student:
    """The teacher with ``sparsity`` of its channels removed by ``cnnlab prune`` (its own run, not
    fine-tuned), starting from the teacher's weights. Refitted, it trains as ``cnnlab prune``
    fine-tunes one: BatchNorm statistics fixed, at ``finetune_lr`` unless ``--lr`` is given."""
    from cnnlab.deploy.prune_run import finetune_lr, prune_run  # the pruning command's code, whatever it improves

    given = {k: v for k, v in options.items() if k != "model"}
    config = student_config(teacher_files, given, setups, pruned_from=teacher)
    data = prepare_data(config.data, config.train.seed, teacher.preprocess.request())
    _check_classes(data, teacher)
    print(f"student: pruning {sparsity:.0%} of the channels of the teacher {teacher_files.root.name}")
    pruned = prune_run(
        teacher_files.root,
        PruneOptions(sparsity=sparsity, finetune_epochs=0, threads=threads),
        command=f"{command} (pruned student)",
        rounds=QUICK_ROUNDS,
    )  # distill times it again
    model = load_trained(pruned.files).model.to(memory_format=torch.contiguous_format)
    # Its weights were learnt on the teacher's scaling: keep the teacher's mean and std.
    preprocess = dataclasses.replace(
        preprocess_of(data, config), mean=teacher.preprocess.mean, std=teacher.preprocess.std
    )
    achieved = pruned.table.data.get("achieved", sparsity)
    label = f"{config.model.name} with {achieved:.0%} of its channels pruned"
    summary = model_summary(model, (data.channels, *data.input_size))
    name = f"{teacher_files.root.name}-pruned{round(100 * sparsity)}"
    refitted = bool(pruned.table.data.get("refitted"))
    lr = finetune_lr(config, given.get("lr"), refitted)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, lr=lr))
    return Student(config, label, data, preprocess, model, summary, name, pruned.files, refitted)


@dataclass
class SizeCheck:
    """Parameters and batch-1 latency (ms) of teacher and student, measured side by side."""

    teacher_params: int
    student_params: int
    teacher_ms: float
    student_ms: float

    @property
    def smaller(self) -> bool:
        return self.student_params < self.teacher_params

    @property
    def faster(self) -> bool:
        return self.student_ms < FASTER_SHARE * self.teacher_ms

    def describe(self, label: str) -> str:
        return (
            f"student {label}: {self.student_params:,} parameters, {self.student_ms:.1f} ms per image; "
            f"teacher: {self.teacher_params:,} parameters, {self.teacher_ms:.1f} ms "
            f"(student/teacher: {self.student_params / self.teacher_params:.2f}x the parameters, "
            f"{self.student_ms / self.teacher_ms:.2f}x the latency)"
        )


QUICK_ROUNDS = 6  # the size check's timing: enough to tell 2x apart, seconds on a slow machine
BATCHNORM_IMAGES = 256  # training images that re-estimate a student's BatchNorm statistics before validation


def measure_sizes(teacher: TrainedModel, student: Student, threads: int) -> SizeCheck:
    """Counts both networks' parameters and times them at batch 1, interleaved, each at its own
    input size (the benchmark's timing)."""
    model = copy.deepcopy(student.model).eval()
    if student.config.train.channels_last:  # the layout the trained student will run in
        model = model.to(memory_format=torch.channels_last)
    height, width = student.data.input_size
    inputs = {
        "teacher": (teacher.model, torch.randn(1, teacher.preprocess.channels, *teacher.preprocess.size)),
        "student": (model, torch.randn(1, student.data.channels, height, width)),
    }
    with torch_threads(threads):
        timings = time_models(inputs, rounds=QUICK_ROUNDS, max_seconds=20)
    return SizeCheck(
        count_parameters(teacher.model)[0],
        count_parameters(model)[0],
        timings["teacher"].p50_ms,
        timings["student"].p50_ms,
    )


def refuse_useless_student(sizes: SizeCheck, label: str, force: bool) -> None:
    """A student neither smaller nor faster than its teacher has nothing to gain from distillation."""
    if sizes.smaller or sizes.faster:
        if not (sizes.smaller and sizes.faster):
            log.warning(
                "the student %s is %s than its teacher: it is only %s",
                label,
                "no faster" if sizes.smaller else "larger",
                "smaller" if sizes.smaller else "faster",
            )
        return
    what = (
        f"the student {label} is no smaller and no faster than its teacher ({sizes.student_params:,} vs "
        f"{sizes.teacher_params:,} parameters, {sizes.student_ms:.1f} vs {sizes.teacher_ms:.1f} ms per image)"
    )
    if force:
        log.warning("%s; going on (--force)", what)
        return
    raise CnnlabError(
        f"{what}: pick a smaller student (the default, --student {PRUNED_STUDENT}, is a pruned copy "
        "of the teacher), or add --force to distil into it anyway"
    )


def teacher_logits(teacher: Teacher, data: PreparedData, config: RunConfig) -> Any:
    """The teacher's logits for every training image, computed once, from images decoded at its own
    size and channels (the student's converted when the two splits do not line up)."""
    own = prepare_data(
        dataclasses.replace(
            config.data,
            image_size=teacher.side,
            channels=teacher.channels,
            crop_pct=teacher.crop_pct,
            crop_mode=teacher.crop_mode,
        ),
        config.train.seed,
        ModelInput(teacher.channels, teacher.side, teacher.crop_pct, teacher.mean),
    ).splits["train"]
    train = data.splits["train"]
    if own.ids != train.ids:
        log.info("the teacher's decoding of the data does not line up with the student's: converting")
        return teacher.logits_of(train.images)
    return teacher.precompute(own)


@recording()  # the student run's own time: its run.json and report say where it went
def train_student(
    student: Student,
    name: str,
    command: str,
    hooks: TrainingHooks,
    distillation: dict[str, Any] | None = None,
    note: str | None = None,
) -> RunFiles:
    """Trains a copy of the student's starting network as a run of its own (tested, reported)."""
    config = dataclasses.replace(student.config, name=name)
    model = copy.deepcopy(student.model)
    ctx = open_new_run(config, command, student.data, student.preprocess, model, student.summary)
    if student.pruned is not None:  # its layer widths are not the config's: stored as a pruned run's are
        from safetensors.torch import save_file

        original = build_model(config, student.data.num_classes, student.preprocess)
        write_architecture(ctx.files.architecture, original, model, {"pruned_from": str(student.pruned.root)})
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(ctx.files.pruned_weights))
    ctx.hooks = hooks
    if distillation is not None:
        ctx.record.distillation = distillation  # also what refuses --resume: the teacher would be missing
    if note is not None:
        ctx.record.notes.append(note)
    write_record(ctx.files, ctx.record)
    finish_run(train_run(ctx))
    return ctx.files


def majority_verdict(files: RunFiles, data: PreparedData) -> dict[str, Any] | None:
    """A run's test accuracy against answering the test split's most common class for every image.

    None when the run has no test score to judge. Half an image of slack keeps float rounding
    from passing a one-class model.
    """
    test = data.splits.get("test")
    accuracy = (read_optional_json(files.metrics_json).get("test") or {}).get("accuracy")
    if accuracy is None or test is None or not len(test):
        return None
    counts = torch.bincount(test.labels, minlength=data.num_classes)
    top = int(counts.argmax())
    rate = int(counts[top]) / len(test)
    return {
        "accuracy": accuracy,
        "majority_class": data.class_names[top],
        "majority_rate": rate,
        "failed": accuracy <= rate + 0.5 / len(test),
    }


def _what_to_try(student: Student, config: RunConfig, alone_failed: bool) -> str:
    if not alone_failed:
        return (
            "the same student alone did better, so the teacher's term misled it: try a lower --alpha (more "
            "weight on the labels) or --temperature"
        )
    lr = config.train.lr if isinstance(config.train.lr, float) else 1e-3
    tips = f"a lower --lr (e.g. {lr / 10:g}) or more --epochs"
    if student.pruned is not None:
        return f"the student alone failed too: try a lower --student-sparsity (e.g. 0.3), {tips}"
    return (
        f"the student alone failed too, so it cannot learn this data at these settings: try --student "
        f"{PRUNED_STUDENT} (a copy of the teacher with part of its channels removed, starting from its "
        f"weights), a student with pretrained weights (--pretrained, or --weights FILE offline), {tips}"
    )


def judge(distilled: RunFiles, alone: RunFiles, student: Student, note: str) -> list[str]:
    """Failure messages for students that did no better than answering the most common class.

    Each run's run.json gets its verdict (the distilled run under ``distillation``, the baseline
    under ``distillation_baseline``) and, when it failed, the message as its report's first note;
    the distilled run also gets ``note`` (how it was made, naming the baseline run).
    """
    runs = {"distilled student": distilled, "student alone": alone}
    verdicts = {who: majority_verdict(files, student.data) for who, files in runs.items()}
    alone_failed = bool((verdicts["student alone"] or {}).get("failed"))
    failures = []
    for who, files in runs.items():
        verdict, run = verdicts[who], read_record(files)
        if who == "distilled student":
            run.distillation = record = run.distillation or {}
            run.notes.append(note)
        else:
            run.distillation_baseline = record = run.distillation_baseline or {"of": str(distilled.root)}
        notes = run.notes
        if verdict is not None:
            record["verdict"] = verdict
        if verdict is not None and verdict["failed"]:
            message = (
                f"the {who} ({student.label}) FAILED: {verdict['accuracy']:.2%} test accuracy is no better "
                f"than answering '{verdict['majority_class']}' for every image ({verdict['majority_rate']:.2%})"
            )
            if who == "distilled student":
                message += f"; {_what_to_try(student, student.config, alone_failed)}"
            failures.append(message)
            notes.insert(0, message[0].upper() + message[1:] + ".")
        write_record(files, run)
    return failures


def no_gain(distilled: RunFiles, alone: RunFiles) -> str | None:
    """What to say when the distilled student is no better on test than the same student alone (both
    learnt something: a failure is judge's), recorded in the distilled run's notes too."""
    ours, theirs = ((read_optional_json(f.metrics_json).get("test") or {}).get("accuracy") for f in (distilled, alone))
    if ours is None or theirs is None or ours > theirs:
        return None
    message = (
        f"distillation did not help: the distilled student scored {ours:.2%} test accuracy, the same student "
        f"alone {theirs:.2%}: use that run ({alone.root})"
    )
    run = read_record(distilled)
    run.notes.insert(0, message[0].upper() + message[1:] + ".")
    write_record(distilled, run)
    return message


def _row(label: str, architecture: str, files: RunFiles, trained: TrainedModel, timing: Any) -> list[str]:
    test = read_optional_json(files.metrics_json).get("test") or {}
    acc = test.get("accuracy")
    return [
        label,
        architecture,
        f"{count_parameters(trained.model)[0]:,}",
        f"{weights_mb(trained.model):.2f}",
        f"{timing.p50_ms:.2f}",
        f"{timing.throughput:.0f}",
        f"{100 * acc:.2f}%" if acc is not None else "—",
    ]


def compare(
    teacher_files: RunFiles,
    alone: RunFiles,
    distilled: RunFiles,
    student: Student,
    threads: int,
    settings: dict[str, Any],
    failures: list[str],
    warnings: list[str],
) -> Table:
    """Teacher, student alone and distilled student: accuracy, size and speed side by side."""
    runs = {"teacher": teacher_files, "student alone": alone, "distilled student": distilled}
    trained = {k: load_trained(f) for k, f in runs.items()}
    data = student.data
    teacher_test = run_data(teacher_files, trained["teacher"]).splits["test"]
    tests = {"teacher": teacher_test, "student alone": data.splits["test"], "distilled student": data.splits["test"]}
    with torch_threads(threads):
        threads = torch.get_num_threads()  # the count asked for, or the thread policy's
        models = {
            k: (open_runtime(runs[k], "pytorch", threads, t).model, normalized(tests[k].images, t.normalize))
            for k, t in trained.items()
        }
        timings = time_models(models)
    names = {"teacher": trained["teacher"].record.model.name or "teacher"}
    rows = [_row(k, names.get(k, student.label), runs[k], trained[k], timings[k]) for k in runs]
    ratio = timings["distilled student"].p50_ms / timings["teacher"].p50_ms
    notes = [
        *(f"FAILED: {failure}" for failure in failures),
        *(f"WARNING: {warning}" for warning in warnings),
        (
            f"temperature {settings['temperature']:g}, alpha {settings['alpha']:g}; the student alone had the "
            f"same options, starting weights and budget ({alone.root})"
        ),
        f"teacher: {teacher_files.root}",
        f"the distilled student answers one image in {ratio:.2f}x the teacher's time",
        (
            f"batch-1 latency and batch-32 throughput in PyTorch eager, {threads} thread"
            f"{'s' if threads > 1 else ''}, interleaved"
        ),
    ]
    if student.pruned is not None:
        before = (read_optional_json(student.pruned.metrics_json).get("test") or {}).get("accuracy")
        if before is not None:
            notes.append(f"the pruned student before any training: {before:.2%} ({student.pruned.root})")
    if "batchnorm" in settings:
        notes.append(f"both students trained with BatchNorm {settings['batchnorm']}")
    if teacher_test.fingerprint() != data.splits["test"].fingerprint():
        notes.append(
            "the teacher's test split is not the student's: its accuracy is on other images, and it may "
            "have trained on some of the student's test images"
        )
    return Table(
        f"Distillation into {distilled.root.name}",
        ["model", "architecture", "parameters", "size MB", "batch 1 p50 ms", "batch 32 img/s", "test accuracy"],
        rows,
        notes,
        {**settings, "latency_ratio": ratio, "failed": bool(failures)},
    )


def _student(
    teacher_files: RunFiles,
    teacher: TrainedModel,
    options: dict[str, Any],
    setups: tuple[str | None, ...],
    sparsity: float,
    threads: int,
    command: str,
) -> Student:
    """The student named by ``options['model']``, or the pruned copy of the teacher when none is."""
    if options.get("model", PRUNED_STUDENT) == PRUNED_STUDENT:
        return pruned_student(teacher_files, teacher, options, setups, sparsity, threads, command)
    return named_student(teacher_files, teacher, options, setups)


def distill(
    teacher: str,
    options: dict[str, Any],
    settings: DistillOptions,
    recipe: str | None = None,
    config_file: str | None = None,
    augment: str | None = None,
    command: str = "cnnlab distill",
) -> Distilled:
    """``cnnlab distill``: trains the student alone and from the teacher, then compares the three.

    Args:
        options: run options by flat name; ``model`` is the student (absent or ``"pruned"``: the
            teacher with ``settings.student_sparsity`` of its channels pruned, starting from its weights).
        settings: the teacher term, the default student's sparsity, ``force`` (go on with a student
            neither smaller nor faster than the teacher) and the threads; checked when created.

    Raises:
        CnnlabError: an unknown model name, a teacher run without a checkpoint, classes that
            differ between teacher and data, settings out of range, or a student neither smaller
            nor faster than its teacher (without ``force``).
    """
    temperature, alpha, sparsity, threads = (
        settings.temperature,
        settings.alpha,
        settings.student_sparsity,
        settings.threads,
    )
    if options.get("model", PRUNED_STUDENT) != PRUNED_STUDENT:
        with flag_named("--student"):
            resolve_name(options["model"])  # before the teacher trains
    teacher_files = teacher_run(teacher, options, command)
    trained_teacher = load_trained(teacher_files)
    student = _student(
        teacher_files, trained_teacher, options, (recipe, config_file, augment), sparsity, threads, command
    )
    sizes = measure_sizes(trained_teacher, student, threads)
    print(sizes.describe(student.label))
    refuse_useless_student(sizes, student.label, settings.force)
    return _distill_into(student, teacher_files, trained_teacher, sizes, (temperature, alpha), threads, command)


def _distill_into(
    student: Student,
    teacher_files: RunFiles,
    trained_teacher: TrainedModel,
    sizes: SizeCheck,
    soft: tuple[float, float],
    threads: int,
    command: str,
) -> Distilled:
    """Trains the student from the teacher and alone, judges both, and compares the three runs."""
    temperature, alpha = soft
    config = student.config
    name = config.name or student.name
    # Without augmentation a training image is the same every epoch, and so are the teacher's logits.
    cached = build_batch_augment(config.augment) is None
    settings = {
        "teacher": str(teacher_files.root),
        "student": student.label,
        "temperature": temperature,
        "alpha": alpha,
        "size_check": dataclasses.asdict(sizes),
        "teacher_logits": "computed once" if cached else "computed per batch (augmentation is on)",
    }
    if student.pruned is not None:
        settings["pruned_from"] = str(student.pruned.root)
    if student.fixed_statistics:
        settings["batchnorm"] = f"statistics fixed (refitted copy), lr {config.train.lr}"
    hooks, alone_hooks = _training_hooks(student, _frozen_teacher(trained_teacher), soft, cached)
    distilled_name = name if config.name else f"{name}-distilled"
    distilled = train_student(student, distilled_name, command, hooks, settings)
    alone = train_student(
        student,
        f"{name}-alone",
        f"{command} (student alone)",
        alone_hooks,
        note=(
            f"The baseline of the distilled run {distilled.root.name}: {student.label} trained on the labels alone, "
            "with the same options, starting weights and budget."
        ),
    )
    failures = judge(
        distilled,
        alone,
        student,
        (
            f"Distilled from the teacher {teacher_files.root.name} into {student.label} (temperature {temperature:g}, "
            f"alpha {alpha:g}); the same student trained alone is {alone.root.name} (teacher, alone and distilled "
            "compared under Deployment)."
        ),
    )
    gain = None if failures else no_gain(distilled, alone)  # a failure says more than "no gain"
    warnings = [gain] if gain else []
    for message in failures + warnings:
        log.warning(message)
    table = compare(teacher_files, alone, distilled, student, threads, settings, failures, warnings)
    table.save(distilled.tables, "distill")
    write_report(distilled.root)
    write_report(alone.root)
    return Distilled(distilled, alone, teacher_files, table, failures, warnings)


def _frozen_teacher(trained_teacher: TrainedModel) -> Teacher:
    """The teacher network with its own input scaling, its weights frozen (it only gives targets)."""
    for param in trained_teacher.model.parameters():
        param.requires_grad_(False)
    return Teacher(
        trained_teacher.model,
        trained_teacher.normalize,
        trained_teacher.preprocess.channels,
        trained_teacher.preprocess.side,
        trained_teacher.preprocess.crop_pct,
        trained_teacher.preprocess.crop_mode,
        trained_teacher.preprocess.mean,
    )


def _training_hooks(
    student: Student, teacher: Teacher, soft: tuple[float, float], cached: bool
) -> tuple[TrainingHooks, TrainingHooks]:
    """How the distilled student trains (the teacher's soft targets) and how the student alone does."""
    temperature, alpha = soft
    began = time.perf_counter()
    logits = teacher_logits(teacher, student.data, student.config) if cached else None
    if logits is not None:
        print(f"teacher logits computed once for {len(logits)} training images ({time.perf_counter() - began:.0f} s)")
    statistics: L.Callback = (
        FrozenBatchNormEval(include_trainable=True)
        if student.fixed_statistics
        else FreshBatchNormStats(sample(student.data.splits["train"].images, BATCHNORM_IMAGES))
    )
    # Both students keep their epoch of best validation accuracy: the distilled one learns the teacher's
    # softened outputs, not the labels' loss; on dtd10 its validation loss was lowest at its first epoch
    # (46% right) while its accuracy rose to 61% three epochs later.
    distilled = TrainingHooks(
        partial(DistillationModule, teacher=teacher, temperature=temperature, alpha=alpha),
        logits,
        [statistics],
        select="accuracy",
    )
    return distilled, TrainingHooks(callbacks=[statistics], select="accuracy")
