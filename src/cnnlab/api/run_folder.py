"""``Run``: a run folder from Python: its options, results, history, model, figures and deploy jobs."""

from __future__ import annotations

import functools
import html
import logging
import shlex
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from cnnlab.config import RunConfig
from cnnlab.deploy.settings import (
    DEFAULT_THREADS,
    DEFAULT_TOP_K,
    FINETUNE_BUDGET,
    FINETUNE_EPOCHS,
    ROUNDS,
    BenchmarkOptions,
    ExportOptions,
    PredictOptions,
    PruneOptions,
    QuantizeOptions,
)

if TYPE_CHECKING:  # heavy imports happen when a method runs, not at ``import cnnlab``
    import numpy as np
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure
    from PIL import Image

    from cnnlab.deploy.export import Export, Format
    from cnnlab.deploy.quantize import Quantized
    from cnnlab.tables import Table
    from cnnlab.training.checkpoint import TrainedModel
    from cnnlab.training.record import RunRecord

ImageLike: TypeAlias = "str | Path | Image.Image | np.ndarray"


def evaluation_jobs() -> ModuleType:  # the training and evaluation packages, imported on first use
    from cnnlab.evaluation import run_evaluation as evaluation_run

    return evaluation_run


def items_of(images: ImageLike | Sequence[ImageLike]) -> list[ImageLike]:
    if isinstance(images, (list, tuple)):
        return list(images)
    return [cast(ImageLike, images)]  # one image (a str or an array is no list of images)


def _inline(figure: Figure | SubFigure) -> Figure | SubFigure:
    """The figure, displayable inline in Jupyter: cnnlab draws without pyplot, so IPython is told once
    how to show a matplotlib Figure (as a PNG) when the notebook has not set that up itself."""
    from cnnlab.progress import in_notebook

    if in_notebook():
        from IPython import get_ipython
        from matplotlib.figure import Figure as FigureType

        formatter = get_ipython().display_formatter.formatters["image/png"]
        if FigureType not in formatter.type_printers:  # %matplotlib inline registers its own
            formatter.for_type(FigureType, _figure_png)
    return figure


def _figure_png(figure: Figure) -> bytes:
    from cnnlab.figures import png_bytes  # matplotlib and pandas: imported by the first figure, not by cnnlab.api

    return png_bytes(figure, figure.dpi)


class Run:
    """A run folder: its options, results, history and model, and figures for a notebook.

    Everything is read from the folder when first asked for, so a Run of a big run is cheap to open.
    """

    def __init__(self, path: str | Path) -> None:
        from cnnlab.training.run_dir import open_run

        self.files = open_run(path)

    # --- what the run folder holds ------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.files.root

    @property
    def name(self) -> str:
        return self.files.root.name

    @property
    def meta(self) -> dict[str, Any]:
        """run.json as it is on disk: classes, preprocessing, data counts, stages, timing, the command."""
        from cnnlab.training.run_dir import read_meta

        return read_meta(self.files)

    @property
    def record(self) -> RunRecord:
        """run.json as types (``cnnlab.training.record``): ``run.record.stages[0].test_acc``, ..."""
        from cnnlab.training.run_dir import read_record

        return read_record(self.files)

    @functools.cached_property
    def config(self) -> RunConfig:
        """The resolved options the run was trained with (config.yaml)."""
        from cnnlab.training.run_dir import read_run_config

        return read_run_config(self.files)

    @property
    def class_names(self) -> list[str]:
        return list(self.record.class_names)

    @property
    def metrics(self) -> dict[str, Any]:
        """Test-set metrics (metrics.json's ``test``): accuracy, loss, per_class, confusion_matrix, ..."""
        from cnnlab.training.run_dir import read_optional_json

        return read_optional_json(self.files.metrics_json).get("test") or {}

    @property
    def history(self) -> pd.DataFrame:
        """One row per epoch: epoch (through all stages), stage, train/val loss and accuracy, lr."""
        from cnnlab.training.history import load_history

        return load_history(self.files.metrics_csv)

    @functools.cached_property
    def trained(self) -> TrainedModel:
        """The best weights in their network (eval mode), with the run's input scaling; loaded once, safely."""
        from cnnlab.training.checkpoint import load_trained

        return load_trained(self.files)

    @property
    def model(self) -> Any:
        """The trained network (a ``torch.nn.Module`` in eval mode)."""
        return self.trained.model

    @property
    def report_path(self) -> Path:
        return self.files.report

    # --- doing things with it -----------------------------------------------------------

    def predict(
        self,
        images: ImageLike | Sequence[ImageLike],
        top_k: int = DEFAULT_TOP_K,
        runtime: str = "auto",
        threads: int = DEFAULT_THREADS,
        tta: bool = False,
    ) -> list[dict[str, Any]]:
        """Top-k classes of image files, folders, PIL images or arrays, with the run's own preprocessing.

        Returns one ``{"input", "top": [{"class", "probability"}], "error", "runtime"}`` per image, in
        order (a folder gives one per image file in it); an unreadable file gets an error, not an
        exception. ``runtime`` in each row names the runtime that answered (pytorch, torchscript, onnx
        or int8). Asked for with ``runtime``: auto (default: the fastest with the checkpoint's own
        outputs: PyTorch, or TorchScript / ONNX FP32 once exported, each checked against it), fastest
        (INT8 too when ``cnnlab benchmark`` or ``quantize`` measured it within 1 point of test
        accuracy: faster, but its probabilities differ), or one of pytorch, torchscript, onnx, int8.
        ``tta``: average each image's probabilities over test-time views (mirror image; 10 crops
        where the run stores a margin), as ``cnnlab predict --tta``.
        """
        from cnnlab.deploy.predict import predict_with

        options = {"top_k": top_k, "runtime": runtime, "threads": threads, "tta": tta}
        return predict_with(self.path, items_of(images), PredictOptions.of(options, "predict"))

    def evaluate(
        self, data: str | Path | None = None, threads: int = DEFAULT_THREADS, tta: bool = False
    ) -> dict[str, Any]:
        """Scores the run on its own test split, or on another folder or built-in set, as ``cnnlab evaluate``.

        Results for other data go to ``<run>/eval/<data>/``; returns the metrics dict. ``threads``:
        0 is cnnlab's thread policy (``cnnlab.threads``), N pins the count. ``tta``: also scored with
        test-time augmentation; its metrics are then the dict's ``tta`` entry, with the views and the
        time per image of both passes (metrics.json's ``test_tta`` and ``tta``).
        """
        from cnnlab.threads import for_command

        for_command(threads)
        metrics: dict[str, Any]
        folder, metrics = evaluation_jobs().evaluate_run(self.path, None if data is None else str(data), tta)
        if tta:
            from cnnlab.training.run_dir import ResultFiles, read_optional_json

            saved = read_optional_json(ResultFiles(folder).metrics_json)
            metrics = {**metrics, "tta": {**saved.get("tta", {}), **saved.get("test_tta", {})}}
        return metrics

    # --- deployment: each writes into the run folder, as its command does ------------------

    def export(
        self,
        format: Format = "onnx",  # noqa: A002  the CLI's name
        tolerance: float | None = None,
        threads: int = DEFAULT_THREADS,
    ) -> Export:
        """Writes ``model.onnx`` (or ``model.ts`` for ``format="torchscript"``) after checking that its
        outputs match the checkpoint's on the run's own images, as ``cnnlab export``."""
        from cnnlab.deploy.export import export_run

        return export_run(
            self.path, ExportOptions.of({"format": format, "tolerance": tolerance, "threads": threads}, "export")
        )

    def quantize(self, calibration: int | None = None, threads: int = DEFAULT_THREADS) -> Quantized:
        """Writes ``model.int8.onnx`` (static INT8 calibrated on training images) and returns its
        before/after table, as ``cnnlab quantize``."""
        from cnnlab.deploy.quantize import quantize_run

        return quantize_run(self.path, QuantizeOptions.of({"calibration": calibration, "threads": threads}, "quantize"))

    def prune(
        self,
        sparsity: float | None = 0.5,
        structured: bool = True,
        finetune_epochs: int = FINETUNE_EPOCHS,
        finetune_lr: float | None = None,
        threads: int = DEFAULT_THREADS,
        max_drop: float | None = None,
        finetune_budget: float | None = FINETUNE_BUDGET,
    ) -> Run:
        """Prunes the model (channels, or single weights with ``structured=False``), fine-tunes until
        validation recovers, and returns the pruned run (``<run>/pruned/...``), as ``cnnlab prune``.
        ``sparsity=None, max_drop=POINTS``: the largest sparsity within that drop on validation. A
        result losing more than ``max_drop`` (default 2) points, or no faster, is logged as a warning."""
        from cnnlab.deploy.prune_run import prune_run

        options = {
            "sparsity": sparsity,
            "max_drop": max_drop,
            "structured": structured,
            "finetune_epochs": finetune_epochs,
            "finetune_budget": finetune_budget,
            "finetune_lr": finetune_lr,
            "threads": threads,
        }
        command = f"cnnlab.load_run({str(self.path)!r}).prune(sparsity={sparsity!r})"
        pruned = prune_run(self.path, PruneOptions.of(options, "prune"), command)
        for warning in pruned.warnings:
            logging.getLogger("cnnlab").warning(warning)
        return Run(pruned.files.root)

    def benchmark(self, threads: int = DEFAULT_THREADS, rounds: int = ROUNDS) -> Table:
        """Size, latency, throughput and accuracy of every runtime the run has, as ``cnnlab benchmark``;
        later predictions use the fastest with the checkpoint's own outputs (INT8 too with
        ``runtime="fastest"``, when it keeps accuracy)."""
        from cnnlab.deploy.benchmark import benchmark_run

        table, _ = benchmark_run(self.path, BenchmarkOptions.of({"threads": threads, "rounds": rounds}, "benchmark"))
        return table

    def tables(self) -> list[Table]:
        """The before/after tables the deploy jobs saved in the run (shown in its report)."""
        from cnnlab.tables import Table

        return Table.load_all(self.files.tables)

    def report(self) -> Path:
        """Rebuilds report.html (redrawing missing figures) and returns its path, as ``cnnlab report``."""
        from cnnlab.evaluation.run_evaluation import write_run_report

        return write_run_report(self.files.root)

    # --- figures for a notebook: drawn on ``ax`` when given, else on a new figure -----------

    def plot_history(self, axes: Sequence[Axes] | None = None) -> Figure | SubFigure:
        """Accuracy and loss per epoch, train and validation, stages marked, and the learning rate
        (its own panel on a new figure; on two given ``axes``, ticks where it changed)."""
        from cnnlab.figures import curve_axes, draw_curves, new_figure

        figure = new_figure(11, 4.2) if axes is None else axes[0].figure
        histories = {self.name: self.history}
        draw_curves(curve_axes(figure, histories) if axes is None else axes, histories)
        return _inline(figure)

    def confusion_matrix(self, normalize: bool = False, ax: Axes | None = None) -> Figure | SubFigure:
        """The test set's confusion matrix (counts, or per-true-class fractions)."""
        import numpy as np

        from cnnlab.errors import CnnlabError
        from cnnlab.evaluation.figures import confusion_side, draw_confusion_matrix
        from cnnlab.figures import new_figure

        matrix = self.metrics.get("confusion_matrix")
        if matrix is None:
            raise CnnlabError(f"run '{self.path}' has no test metrics yet; evaluate it first: cnnlab.evaluate(run)")
        if ax is None:
            side = confusion_side(len(self.class_names))
            ax = new_figure(side + 1.0, side).add_subplot()
        ax.set_title(draw_confusion_matrix(ax, np.asarray(matrix), self.class_names, normalize))
        return _inline(ax.figure)

    def _repr_html_(self) -> str:
        """A compact summary for Jupyter: the headline numbers and the two key figures."""
        record, metrics = self.record, self.metrics
        accuracy = metrics.get("accuracy")
        seconds = record.timing.train_seconds
        rows = [
            ("model", record.model.name),
            ("data", record.data.source),
            ("classes", len(record.class_names)),
            ("epochs", len(self.history)),
            ("training time", f"{seconds:.0f} s" if seconds is not None else "—"),
            ("status", record.status),
            ("folder", str(self.path)),
        ]
        table = "".join(
            f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in rows
        )
        from cnnlab.figures import png_html

        images = png_html([self.files.figure(key) for key in ("history", "confusion_matrix")], "48%")
        headline = f"{accuracy:.2%} test accuracy" if accuracy is not None else "no test accuracy yet"
        return f"<div><b>cnnlab run {html.escape(self.name)}</b>: {headline}<table>{table}</table>{images}</div>"

    def __repr__(self) -> str:
        accuracy = self.metrics.get("accuracy")
        shown = f", test accuracy {accuracy:.2%}" if accuracy is not None else ""
        return f"Run({shlex.quote(str(self.path))}{shown})"
