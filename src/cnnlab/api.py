"""cnnlab from Python: the same jobs as the command line, for notebooks and scripts.

    import cnnlab
    run = cnnlab.train("mnist-sample", model="simple_cnn", epochs=5)
    run.metrics["accuracy"]; run.plot_history(); run.confusion_matrix()
    run.predict(["cat.jpg", pil_image, numpy_array], top_k=3)
    run = cnnlab.load_run("runs/flowers"); cnnlab.evaluate(run, data="other/folder")

Keyword arguments of :func:`train` are the options of ``cnnlab train`` by their flag names
(``epochs=5`` is ``--epochs 5``), with the same defaults, allowed values and checks; errors are
the same one-line ``CnnlabError`` messages, raised, never ``sys.exit``.
"""

from __future__ import annotations

import functools
import html
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from cnnlab.config import RunConfig, build_config
from cnnlab.deploy.settings import DEFAULT_THREADS
from cnnlab.serve import settings as serving

if TYPE_CHECKING:  # heavy imports happen when a function runs, not at ``import cnnlab``
    import numpy as np
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from PIL import Image

    from cnnlab.training.checkpoint import TrainedModel

ImageLike = "str | Path | Image.Image | np.ndarray"


def _training():  # noqa: ANN202  the training packages, imported on first use
    from cnnlab.evaluation import run as evaluation_run

    return evaluation_run


def configure(data: str | Path | None = None, *, recipe: str | None = None, config: str | Path | None = None,
              augment: str | None = None, **options: Any) -> RunConfig:
    """The RunConfig ``cnnlab train`` would build from the same options (checked, not run)."""
    if data is not None:
        options["data"] = str(data)
    return build_config(recipe=recipe, config_file=config, augment=augment, **options)


def train(data: str | Path = "mnist-sample", *, recipe: str | None = None, config: str | Path | None = None,
          augment: str | None = None, **options: Any) -> Run:
    """Trains, evaluates on the test split and writes a run folder with its report, as ``cnnlab train``.

    Args:
        data: an image folder, a CSV listing, or a built-in set (``mnist-sample``, ``digits``, ...).
        recipe: a named setup (``cnnlab recipes list``); options given here override it.
        config: a YAML file of options (``train: {epochs: 5}``); options given here override it.
        augment: an augmentation preset (none, light, lesson, production, strong).
        **options: any option of ``cnnlab train`` by its flag name: ``model="resnet18"``,
            ``epochs=5``, ``pretrained=True``, ``image_size=128``, ``rotation=10``, ...

    Returns:
        The finished run (its folder is ``run.path``).

    Raises:
        CnnlabError: a bad option or bad data, with the same message as the command line.
    """
    settings = configure(data, recipe=recipe, config=config, augment=augment, **options)
    given = {"recipe": recipe, "config": config, "augment": augment, **options}
    call = ", ".join([repr(str(data))] + [f"{k}={v!r}" for k, v in given.items() if v is not None])
    return run_training(settings, f"cnnlab.train({call})")


def run_training(config: RunConfig, command: str) -> Run:
    """Trains, evaluates and reports a checked config; ``command`` is recorded in run.json to reproduce it.

    Raises:
        TrainingInterrupted: on Ctrl-C, once the last finished epoch and a report are saved.
    """
    files, _ = _training().train_and_evaluate(config, command)
    return Run(files.root)


def resume(run: Run | str | Path) -> Run:
    """Continues a stopped run from its last checkpoint, as ``cnnlab train --resume``."""
    path = run.path if isinstance(run, Run) else Path(run)
    files, _ = _training().train_and_evaluate(None, f"cnnlab.resume({str(path)!r})", resume_path=str(path))
    return Run(files.root)


def load_run(path: str | Path) -> Run:
    """Reopens a run folder (``runs/<name>``).

    Raises:
        CnnlabError: when the folder is missing or not a cnnlab run.
    """
    return Run(path)


def evaluate(run: Run | str | Path, data: str | Path | None = None) -> dict[str, Any]:
    """Scores a run on its own test split, or on another folder or built-in set, as ``cnnlab evaluate``.

    Results for other data go to ``<run>/eval/<data>/``; returns the metrics dict.
    """
    path = run.path if isinstance(run, Run) else Path(run)
    _, metrics = _training().evaluate_run(path, None if data is None else str(data))
    return metrics


def predict(run: Run | str | Path, images: ImageLike | Sequence[ImageLike], top_k: int = 3, runtime: str = "auto",
            threads: int = DEFAULT_THREADS) -> list[dict[str, Any]]:
    """Top-k classes of images with a run's model (see :meth:`Run.predict`), or with a ``.onnx`` /
    TorchScript file written by ``cnnlab export`` on its own."""
    if not isinstance(run, Run) and Path(run).expanduser().is_file():
        from cnnlab.deploy.predict import predict_with

        return predict_with(run, _items(images), top_k, runtime, threads)
    return (run if isinstance(run, Run) else Run(run)).predict(images, top_k, runtime, threads)


def serve(run: Run | str | Path, *, host: str = serving.DEFAULT_HOST, port: int = serving.DEFAULT_PORT,
          max_upload_mb: float = serving.DEFAULT_MAX_UPLOAD_MB, max_files: int = serving.DEFAULT_MAX_FILES,
          batching: str = "auto", max_batch: int = serving.DEFAULT_MAX_BATCH,
          batch_window_ms: float = serving.DEFAULT_BATCH_WINDOW_MS, runtime: str = "auto",
          threads: int = DEFAULT_THREADS) -> None:
    """Serves a run (its fastest runtime) or an exported model over HTTP until Ctrl-C, as ``cnnlab serve``.

    Blocks; the page is at ``http://HOST:PORT/``, the API at ``/predict``, ``/health`` and ``/docs``.
    """
    from cnnlab.serve.server import serve as run_server

    target = run.path if isinstance(run, Run) else run
    if batching not in serving.BATCHING:
        from cnnlab.errors import CnnlabError

        raise CnnlabError(f"batching must be one of {', '.join(serving.BATCHING)}, got '{batching}'")
    run_server(target, serving.ServeSettings(host=host, port=port, max_upload_mb=max_upload_mb, max_files=max_files,
                                             batching=batching, max_batch=max_batch, batch_window_ms=batch_window_ms,
                                             threads=threads, runtime=runtime))


def _items(images: ImageLike | Sequence[ImageLike]) -> list[ImageLike]:
    return list(images) if isinstance(images, (list, tuple)) else [images]


def _inline(figure: Figure) -> Figure:
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
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi)
    return buffer.getvalue()


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
        """run.json: classes, preprocessing, data counts, stages, timing, the command."""
        from cnnlab.training.run_dir import read_meta

        return read_meta(self.files)

    @functools.cached_property
    def config(self) -> RunConfig:
        """The resolved options the run was trained with (config.yaml)."""
        from cnnlab.training.run_dir import read_run_config

        return read_run_config(self.files)

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def metrics(self) -> dict[str, Any]:
        """Test-set metrics (metrics.json's ``test``): accuracy, loss, per_class, confusion_matrix, ..."""
        from cnnlab.training.run_dir import read_optional_json

        return read_optional_json(self.files.metrics_json).get("test") or {}

    @property
    def history(self) -> "pd.DataFrame":
        """One row per epoch: epoch (through all stages), stage, train/val loss and accuracy, lr."""
        from cnnlab.training.history import load_history

        return load_history(self.files.metrics_csv)

    @functools.cached_property
    def trained(self) -> "TrainedModel":
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

    def predict(self, images: ImageLike | Sequence[ImageLike], top_k: int = 3, runtime: str = "auto",
                threads: int = DEFAULT_THREADS) -> list[dict[str, Any]]:
        """Top-k classes of image files, folders, PIL images or arrays, with the run's own preprocessing.

        Returns one ``{"input", "top": [{"class", "probability"}], "error"}`` per image, in order
        (a folder gives one per image file in it); an unreadable file gets an error, not an exception.
        ``runtime``: auto (the fastest measured by ``cnnlab benchmark`` that keeps accuracy), pytorch
        (the checkpoint), torchscript, onnx or int8 (artifacts made by ``cnnlab export``/``quantize``).
        """
        from cnnlab.deploy.predict import predict_with

        return predict_with(self.path, _items(images), top_k, runtime, threads)

    def evaluate(self, data: str | Path | None = None) -> dict[str, Any]:
        """See :func:`cnnlab.evaluation`."""
        return evaluate(self, data)

    def report(self) -> Path:
        """Rebuilds report.html (redrawing missing figures) and returns its path, as ``cnnlab report``."""
        from cnnlab.evaluation.run import write_run_report

        return write_run_report(self.files.root)

    # --- figures for a notebook: drawn on ``ax`` when given, else on a new figure -----------

    def plot_history(self, axes: "Sequence[Axes] | None" = None) -> "Figure":
        """Accuracy and loss per epoch, train and validation, stages and LR changes marked."""
        from cnnlab.figures import draw_curves, new_figure

        figure = new_figure(11, 4.2) if axes is None else axes[0].figure
        draw_curves(figure.subplots(1, 2) if axes is None else axes, {self.name: self.history})
        return _inline(figure)

    def confusion_matrix(self, normalize: bool = False, ax: "Axes | None" = None) -> "Figure":
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
        meta, metrics = self.meta, self.metrics
        accuracy = metrics.get("accuracy")
        seconds = (meta.get("timing") or {}).get("train_seconds")
        rows = [("model", (meta.get("model") or {}).get("name")), ("data", (meta.get("data") or {}).get("source")),
                ("classes", len(meta.get("class_names") or [])), ("epochs", len(self.history)),
                ("training time", f"{seconds:.0f} s" if seconds is not None else "—"),
                ("status", meta.get("status")), ("folder", str(self.path))]
        table = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                        for k, v in rows)
        from cnnlab.figures import png_html

        images = png_html([self.files.figure(key) for key in ("history", "confusion_matrix")], "48%")
        headline = f"{accuracy:.2%} test accuracy" if accuracy is not None else "no test accuracy yet"
        return (f"<div><b>cnnlab run {html.escape(self.name)}</b>: {headline}"
                f"<table>{table}</table>{images}</div>")

    def __repr__(self) -> str:
        accuracy = self.metrics.get("accuracy")
        shown = f", test accuracy {accuracy:.2%}" if accuracy is not None else ""
        return f"Run({shlex.quote(str(self.path))}{shown})"


