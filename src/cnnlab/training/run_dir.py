"""The run folder: every file a run writes, named here and nowhere else, and the ways to open one.

``runs/<name>/`` holds everything a later command needs. Evaluations on other data go to
``runs/<name>/eval/<data>/``, with the same result files (``ResultFiles``) as the run's own.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.config import RunConfig, config_yaml, from_dict, load_yaml
from cnnlab.data.types import SkippedFile
from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write_json, atomic_write_text
from cnnlab.training.record import RunRecord


@dataclass(frozen=True)
class FigureFile:
    """A figure a run can hold: its file name and the caption the report gives it."""

    file: str
    caption: str


# Every figure of a run, in the order the report shows them within its sections.
FIGURES: dict[str, FigureFile] = {
    "history": FigureFile("history.png", "Training and validation accuracy and loss per epoch, and the learning rate"),
    "lr_find": FigureFile(
        "lr_find.png", "Learning-rate finder: training loss as the rate grows (log scale), the pick marked"
    ),
    "confusion_matrix": FigureFile("confusion_matrix.png", "Confusion matrix (counts; rows = true class)"),
    "confusion_matrix_normalized": FigureFile(
        "confusion_matrix_normalized.png", "Confusion matrix normalised per true class (recall)"
    ),
    "misclassified": FigureFile("misclassified.png", "The most confident mistakes on the test set"),
    "per_class_accuracy": FigureFile("per_class_accuracy.png", "Accuracy (recall) per class"),
    "most_confused": FigureFile("most_confused.png", "Most frequent mistakes"),
    "reliability": FigureFile("reliability.png", "Calibration: confidence vs accuracy"),
    "class_counts": FigureFile("class_counts.png", "Images per class"),
    "samples": FigureFile("samples.png", "Sample images per class"),
    "augmentation": FigureFile("augmentation.png", "Augmented training images"),
    "prune_sweep": FigureFile(
        "prune_sweep.png",
        "Pruning sweep (cnnlab prune --max-drop): validation and test "
        "accuracy and batch-1 latency by sparsity, the allowed drop and the kept one marked",
    ),
    "explain_filters": FigureFile(
        "explain/filters.png", "The first convolution's filters: what the network looks for in raw pixels"
    ),
    "explain_gradcam": FigureFile(
        "explain/gradcam_test.png",
        "Grad-CAM on test images: where the model looked (red = most), correct "
        "predictions first, then the most confident mistakes",
    ),
}


@dataclass(frozen=True)
class ResultFiles:
    """The files of one evaluation: the metrics, the text report and the result figures."""

    root: Path

    @property
    def metrics_json(self) -> Path:
        return self.root / "metrics.json"

    @property
    def classification_report(self) -> Path:
        return self.root / "classification_report.txt"

    def figure(self, key: str) -> Path:
        """The path of figure ``key`` (a key of :data:`FIGURES`)."""
        return self.root / FIGURES[key].file

    @property
    def lr_find_curve(self) -> Path:
        """The learning-rate finder's rates, losses, pick and rule (``--lr auto``, ``cnnlab lr-find``)."""
        return self.root / "lr_find.json"


@dataclass(frozen=True)
class RunFiles(ResultFiles):
    """Names of the files in ``runs/<name>/``."""

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def meta(self) -> Path:
        return self.root / "run.json"

    @property
    def metrics_csv(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def refit(self) -> Path:
        """A refit's latest epoch (``cnnlab.training.refit``), moved to best.ckpt when the refit ends."""
        return self.checkpoints / "refit.ckpt"

    @property
    def validated(self) -> Path:
        """After a refit: the model the stages chose on validation (best.ckpt until the refit replaced it)."""
        return self.checkpoints / "validated.ckpt"

    @property
    def skipped(self) -> Path:
        return self.root / "skipped_files.csv"

    @property
    def summary(self) -> Path:
        return self.root / "model_summary.txt"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files (``tensorboard --logdir runs``)."""
        return self.root / "tensorboard"

    @property
    def explain(self) -> Path:
        """``cnnlab explain`` figures and tables of this run (and the report's Explain figures)."""
        return self.root / "explain"

    # Deployment artifacts (``cnnlab export`` / ``quantize``): each carries the classes and the
    # preprocessing inside it, and ``model.json`` repeats them beside it for people and other tools.
    @property
    def onnx(self) -> Path:
        return self.root / "model.onnx"

    @property
    def int8_onnx(self) -> Path:
        return self.root / "model.int8.onnx"

    @property
    def torchscript(self) -> Path:
        return self.root / "model.ts"

    @property
    def deploy_meta(self) -> Path:
        """``model.json``: classes, preprocessing, and what was checked and measured of each artifact."""
        return self.root / "model.json"

    @property
    def tables(self) -> Path:
        """Before/after tables of the deploy commands (``<name>.json`` and ``<name>.md``)."""
        return self.root / "tables"

    def table(self, name: str, suffix: str = ".json") -> Path:
        return self.tables / f"{name}{suffix}"

    @property
    def pruned(self) -> Path:
        """Run folders of pruned copies of this run's model (``cnnlab prune``)."""
        return self.root / "pruned"

    @property
    def architecture(self) -> Path:
        """A pruned run's layer shapes that differ from the architecture its config builds."""
        return self.root / "architecture.json"

    @property
    def pruned_weights(self) -> Path:
        """A pruned run's weights right after pruning (plain tensors); fine-tuning writes checkpoints."""
        return self.root / "pruned.safetensors"

    def evaluation(self, data: str) -> ResultFiles:
        """Where ``cnnlab evaluate RUN --data DATA`` writes, so the run's own results stay."""
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(data.rstrip("/\\")).name or data).strip("-") or "data"
        return ResultFiles(self.root / "eval" / name)

    def written_names(self) -> list[str]:
        """Paths (relative, ``*`` for any file below a folder) of everything a run may write."""
        files = [
            self.config,
            self.meta,
            self.metrics_csv,
            self.metrics_json,
            self.classification_report,
            self.best,
            self.last,
            self.skipped,
            self.summary,
            self.report,
            self.onnx,
            self.int8_onnx,
            self.torchscript,
            self.deploy_meta,
            self.architecture,
            self.pruned_weights,
            self.lr_find_curve,
        ]
        names = [p.relative_to(self.root).as_posix() for p in files]
        folders = [self.tensorboard, self.root / "eval", self.explain, self.tables, self.pruned]
        return (
            names + [f.file for f in FIGURES.values()] + [f"{p.relative_to(self.root).as_posix()}/*" for p in folders]
        )


def default_name(config: RunConfig) -> str:
    """``<model>-<data>``, e.g. ``simple_cnn-mnist-sample``."""
    data = Path(config.data.source.rstrip("/\\")).stem or "data"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{config.model.name}-{data}").strip("-")


def new_run_dir(config: RunConfig) -> RunFiles:
    """Creates ``runs/<name>``, or ``<name>-2``, ``-3``... when taken (never overwrites a run)."""
    return RunFiles(claim_folder(Path(config.runs_dir).expanduser(), config.name or default_name(config), "run"))


def renamed_note(config: RunConfig, files: RunFiles) -> str | None:
    """The note for a run given ``--name`` that was taken: the folder it got, and how to go on with the old one."""
    if config.name is None or files.root.name == config.name:
        return None
    taken = files.root.parent / config.name
    return (
        f"run folder '{taken}' exists, so this run is '{files.root}' (to continue that run instead: "
        f"cnnlab train --resume {taken})"
    )


def claim_folder(base: Path, name: str, what: str, option: str = "--runs-dir") -> Path:
    """Creates ``base/<name>``, or ``<name>-2``, ``-3``... when taken: a new folder, never one in use.

    Args:
        what: what the folder is for, in messages ("run", "comparison").
        option: the option that sets ``base``, named when it cannot be written.
    """
    for number in range(1, 10_000):
        candidate = base / (name if number == 1 else f"{name}-{number}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)  # atomic claim, safe with parallel runs
        except FileExistsError:
            continue
        except OSError as exc:
            raise CnnlabError(f"cannot create {what} folder '{candidate}': {exc.strerror}; check {option}") from None
        return candidate
    raise CnnlabError(f"too many {what}s named '{name}' in {base}; pick another name")


def open_run(path: str | Path) -> RunFiles:
    """An existing run folder, checked to be one.

    Raises:
        CnnlabError: when the folder is missing or is not a cnnlab run.
    """
    files = RunFiles(Path(path).expanduser())
    if not files.root.is_dir():
        raise CnnlabError(f"run folder '{files.root}' not found; runs are in runs/<name>")
    if not files.meta.is_file():
        raise CnnlabError(f"'{files.root}' is not a cnnlab run folder (no run.json in it)")
    return files


def read_meta(files: RunFiles) -> dict[str, Any]:
    """run.json, checked to hold a JSON object.

    Raises:
        CnnlabError: when it is not valid JSON (e.g. edited by hand).
    """
    try:
        data = json.loads(files.meta.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CnnlabError(f"{files.meta} is not valid JSON ({exc}); restore it or train again") from None
    if not isinstance(data, dict):
        raise CnnlabError(f"{files.meta} should hold a JSON object")
    return data


def read_record(files: RunFiles) -> RunRecord:
    """run.json as its types (older files included: see ``cnnlab.training.record``).

    Raises:
        CnnlabError: when it is not valid JSON, or its input format is incomplete.
    """
    raw = read_meta(files)
    try:
        return RunRecord.from_json(raw)
    except CnnlabError as exc:  # name the file, not just "run.json"
        raise CnnlabError(str(exc).replace("run.json", str(files.meta), 1)) from None


def write_record(files: RunFiles, record: RunRecord) -> None:
    atomic_write_json(files.meta, record.to_json())


def read_optional_json(path: Path) -> dict[str, Any]:
    """A JSON object file, or {} when it is missing or unreadable (an interrupted run)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_text(path: Path) -> str | None:
    """A text file of the run, or None when it is missing."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def read_run_config(files: RunFiles) -> RunConfig:
    if not files.config.is_file():
        raise CnnlabError(f"'{files.root}' has no config.yaml; it is not a complete cnnlab run folder")
    return from_dict(load_yaml(files.config))


def write_config(files: RunFiles, config: RunConfig) -> None:
    atomic_write_text(files.config, config_yaml(config))


def write_skipped(files: RunFiles, skipped: list[SkippedFile]) -> None:
    """``skipped_files.csv``: every input file that was not used, with the reason."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "reason"])
    writer.writerows([item.path, item.reason] for item in skipped)
    atomic_write_text(files.skipped, buffer.getvalue())


def read_skipped(files: RunFiles) -> list[dict[str, str]]:
    """The rows of skipped_files.csv (path, reason), [] when there is none."""
    text = read_text(files.skipped) or ""
    return list(csv.DictReader(text.splitlines()))
