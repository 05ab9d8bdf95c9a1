"""``cnnlab distill``: a small student trained from a teacher, compared with the same student alone.

Three run folders come out of it, all ordinary runs: the teacher (an existing run, or one trained
here by transfer learning from a pretrained model name), the student trained alone with the same
options (its baseline), and the distilled student, whose report holds the comparison table.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from cnnlab.augment.batch import build_batch_augment
from cnnlab.config import RunConfig, TrainConfig, build_config
from cnnlab.data.prepare import InputNeeds, prepare_data
from cnnlab.data.types import PreparedData
from cnnlab.deploy.benchmark import normalized, time_models, weights_mb
from cnnlab.deploy.distill_module import DistillationModule, Teacher
from cnnlab.deploy.runtime import open_runtime, torch_threads
from cnnlab.deploy.settings import ALPHA, DEFAULT_THREADS, TEMPERATURE
from cnnlab.errors import CnnlabError
from cnnlab.evaluation.report import write_report
from cnnlab.evaluation.run import finish_run, run_data, train_and_evaluate
from cnnlab.models import resolve_name
from cnnlab.models.summary import count_parameters
from cnnlab.tables import Table
from cnnlab.training.checkpoint import TrainedModel, load_trained
from cnnlab.training.fit import train_run
from cnnlab.training.hooks import TrainingHooks
from cnnlab.training.run_dir import RunFiles, default_name, open_run, read_optional_json, read_run_config, write_meta
from cnnlab.training.start import start_run

log = logging.getLogger("cnnlab")
DATA_OPTIONS = ("data", "val_split", "test_split", "batch_size", "workers", "sampler", "seed", "runs_dir")


@dataclass
class Distilled:
    """The three runs and the comparison table (saved in the distilled run)."""

    files: RunFiles
    alone: RunFiles
    teacher: RunFiles
    table: Table


def check_settings(temperature: float, alpha: float) -> None:
    if not temperature > 0:
        raise CnnlabError(f"--temperature must be above 0, got {temperature:g}; e.g. 4")
    if not 0 <= alpha <= 1:
        raise CnnlabError(f"--alpha must be between 0 and 1, got {alpha:g} (0: labels only, 1: teacher only)")


def teacher_run(teacher: str, options: dict[str, Any], command: str) -> RunFiles:
    """The teacher's run folder: the one given, or a transfer run of the pretrained model named."""
    path = Path(teacher).expanduser()
    if path.is_dir():
        return open_run(path)
    if "/" in teacher or "\\" in teacher:
        raise CnnlabError(f"teacher run folder '{teacher}' not found; give a run folder or a model name")
    resolve_name(teacher)  # an unknown name fails here, with close matches
    if not options.get("data"):
        raise CnnlabError(f"--teacher {teacher} is a model name: give DATA to train it on first")
    given = {k: v for k, v in options.items() if k in DATA_OPTIONS}
    config = build_config(**given, model=teacher, pretrained=True)
    config = dataclasses.replace(config, name=f"{default_name(config)}-teacher")
    print(f"training the teacher {teacher} (pretrained) on {options['data']} first")
    files, _ = train_and_evaluate(config, f"{command} (teacher)")
    return files


def student_config(teacher_files: RunFiles, options: dict[str, Any], recipe: str | None,
                   config_file: str | None, augment: str | None) -> RunConfig:
    """The teacher's data and split (so its test images stay unseen), then the student's options."""
    taught = read_run_config(teacher_files)
    base = RunConfig(data=dataclasses.replace(taught.data, image_size=None, channels=None),
                     train=dataclasses.replace(TrainConfig(), seed=taught.train.seed),
                     runs_dir=str(teacher_files.root.parent))
    config = build_config(recipe, config_file, augment, base=base, **options)
    if config.augment.mixup > 0 or config.augment.cutmix > 0:
        raise CnnlabError("--mixup/--cutmix cannot be combined with distillation (the teacher would need the "
                          "mixed images); drop them")
    return config


def teacher_logits(teacher: Teacher, data: PreparedData, config: RunConfig) -> Any:
    """The teacher's logits for every training image, computed once, from images decoded at its own
    size and channels (the student's converted when the two splits do not line up)."""
    own = prepare_data(dataclasses.replace(config.data, image_size=teacher.side, channels=teacher.channels,
                                           crop_pct=teacher.crop_pct),
                       config.train.seed, InputNeeds(teacher.channels, teacher.side, teacher.crop_pct)).splits["train"]
    train = data.splits["train"]
    if own.ids != train.ids:
        log.info("the teacher's decoding of the data does not line up with the student's: converting")
        return teacher.logits_of(train.images)
    return teacher.precompute(own)


def _row(label: str, files: RunFiles, trained: TrainedModel, timing: Any) -> list[str]:
    test = read_optional_json(files.metrics_json).get("test") or {}
    acc = test.get("accuracy")
    return [label, trained.meta["model"]["name"], f"{count_parameters(trained.model)[0]:,}",
            f"{weights_mb(trained.model):.2f}", f"{timing.p50_ms:.2f}", f"{timing.throughput:.0f}",
            f"{100 * acc:.2f}%" if acc is not None else "—"]


def compare(teacher_files: RunFiles, alone: RunFiles, distilled: RunFiles, data: PreparedData,
            threads: int, settings: dict[str, Any]) -> Table:
    """Teacher, student alone and distilled student: accuracy, size and speed side by side."""
    runs = {"teacher": teacher_files, "student alone": alone, "distilled student": distilled}
    trained = {k: load_trained(f) for k, f in runs.items()}
    teacher_test = run_data(teacher_files, trained["teacher"]).splits["test"]
    tests = {"teacher": teacher_test, "student alone": data.splits["test"], "distilled student": data.splits["test"]}
    with torch_threads(threads):
        models = {k: (open_runtime(runs[k], "pytorch", threads, t).model, normalized(tests[k].images, t.normalize))
                  for k, t in trained.items()}
        timings = time_models(models)
    rows = [_row(k, runs[k], trained[k], timings[k]) for k in runs]
    notes = [(f"temperature {settings['temperature']:g}, alpha {settings['alpha']:g}; the student alone had the "
              f"same options and budget ({alone.root})"), f"teacher: {teacher_files.root}",
             (f"batch-1 latency and batch-32 throughput in PyTorch eager, {threads} thread"
              f"{'s' if threads > 1 else ''}, interleaved")]
    if teacher_test.fingerprint() != data.splits["test"].fingerprint():
        notes.append("the teacher's test split is not the student's: its accuracy is on other images, and it may "
                     "have trained on some of the student's test images")
    return Table(f"Distillation into {distilled.root.name}", ["model", "architecture", "parameters", "size MB",
                 "batch 1 p50 ms", "batch 32 img/s", "test accuracy"], rows, notes, settings)


def distill(teacher: str, options: dict[str, Any], temperature: float = TEMPERATURE, alpha: float = ALPHA,
            recipe: str | None = None, config_file: str | None = None, augment: str | None = None,
            threads: int = DEFAULT_THREADS, command: str = "cnnlab distill") -> Distilled:
    """``cnnlab distill``: trains the student alone and from the teacher, then compares the three.

    Args:
        options: run options by flat name; ``model`` is the student.

    Raises:
        CnnlabError: a missing student, an unknown model name, a teacher run without a checkpoint,
            classes that differ between teacher and data, or settings out of range.
    """
    check_settings(temperature, alpha)
    if not options.get("model"):
        raise CnnlabError("no student given; e.g. --student mobilenetv3_small_100 (cnnlab models list)")
    resolve_name(options["model"])
    teacher_files = teacher_run(teacher, options, command)
    trained_teacher = load_trained(teacher_files)
    config = student_config(teacher_files, options, recipe, config_file, augment)
    name = config.name or default_name(config)
    ctx = start_run(dataclasses.replace(config, name=f"{name}-distilled" if not config.name else name), command)
    if ctx.data.class_names != trained_teacher.class_names:
        shutil.rmtree(ctx.files.root)
        raise CnnlabError(f"the teacher knows classes {trained_teacher.class_names[:5]}..., the data has "
                          f"{ctx.data.class_names[:5]}...: distill on the data the teacher was trained on")
    for param in trained_teacher.model.parameters():
        param.requires_grad_(False)
    teacher_net = Teacher(trained_teacher.model, trained_teacher.normalize, trained_teacher.channels,
                          trained_teacher.side, trained_teacher.crop_pct)
    cached = build_batch_augment(config.augment) is None
    settings = {"teacher": str(teacher_files.root), "temperature": temperature, "alpha": alpha,
                "teacher_logits": "computed once" if cached else "computed per batch (augmentation is on)"}
    began = time.perf_counter()
    logits = teacher_logits(teacher_net, ctx.data, config) if cached else None
    if logits is not None:
        print(f"teacher logits computed once for {len(logits)} training images ({time.perf_counter() - began:.0f} s)")
    ctx.hooks = TrainingHooks(partial(DistillationModule, teacher=teacher_net, temperature=temperature, alpha=alpha),
                              logits)
    ctx.meta["distillation"] = settings
    ctx.meta.setdefault("notes", []).append(
        f"Distilled from the teacher {teacher_files.root.name} (temperature {temperature:g}, alpha {alpha:g}); "
        f"the same student trained alone is {name}-alone (teacher, alone and distilled compared under Deployment).")
    write_meta(ctx.files, ctx.meta)
    finish_run(train_run(ctx))
    alone, _ = train_and_evaluate(dataclasses.replace(config, name=f"{name}-alone"), f"{command} (student alone)")
    table = compare(teacher_files, alone, ctx.files, ctx.data, threads, settings)
    table.save(ctx.files.tables, "distill")
    write_report(ctx.files.root)
    return Distilled(ctx.files, alone, teacher_files, table)
