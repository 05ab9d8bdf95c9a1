"""cnnlab from Python: the same jobs as the command line, for notebooks and scripts.

    import cnnlab
    run = cnnlab.train("mnist-sample", model="simple_cnn", epochs=5)
    run.metrics["accuracy"]; run.plot_history(); run.confusion_matrix()
    run.predict(["cat.jpg", pil_image, numpy_array], top_k=3)
    run = cnnlab.load_run("runs/flowers"); cnnlab.evaluate(run, data="other/folder")

Keyword arguments of ``train`` are the options of ``cnnlab train`` by their flag names
(``epochs=5`` is ``--epochs 5``), with the same defaults, allowed values and checks; errors are
the same one-line ``CnnlabError`` messages, raised, never ``sys.exit``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.api.run_folder import ImageLike, Run, evaluation_jobs, items_of
from cnnlab.config import RunConfig, build_config
from cnnlab.deploy.settings import (
    DEFAULT_THREADS,
    DEFAULT_TOP_K,
    PRUNED_STUDENT,
    STUDENT_SPARSITY,
    DistillOptions,
    PredictOptions,
)
from cnnlab.serving import settings as serving

if TYPE_CHECKING:
    from cnnlab.cleaning.issues import LabelIssues
    from cnnlab.comparison.architectures import Comparison
    from cnnlab.training.lr_finder import LrFinding
    from cnnlab.tuning.study import TuneResult

__all__ = [
    "Run",
    "compare",
    "configure",
    "distill",
    "evaluate",
    "label_issues",
    "load_run",
    "lr_find",
    "predict",
    "resume",
    "run_training",
    "serve",
    "train",
    "tune",
]


def configure(
    data: str | Path | None = None,
    *,
    recipe: str | None = None,
    config: str | Path | None = None,
    augment: str | None = None,
    **options: Any,
) -> RunConfig:
    """The RunConfig ``cnnlab train`` would build from the same options (checked, not run)."""
    if data is not None:
        options["data"] = str(data)
    return build_config(recipe=recipe, config_file=config, augment=augment, **options)


def train(
    data: str | Path = "mnist-sample",
    *,
    recipe: str | None = None,
    config: str | Path | None = None,
    augment: str | None = None,
    **options: Any,
) -> Run:
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
    files, _ = evaluation_jobs().train_and_evaluate(config, command)
    return Run(files.root)


def resume(run: Run | str | Path) -> Run:
    """Continues a stopped run from its last checkpoint, as ``cnnlab train --resume``."""
    path = run.path if isinstance(run, Run) else Path(run)
    files, _ = evaluation_jobs().train_and_evaluate(None, f"cnnlab.resume({str(path)!r})", resume_path=str(path))
    return Run(files.root)


def lr_find(
    data: str | Path | None = None,
    *,
    recipe: str | None = None,
    config: str | Path | None = None,
    augment: str | None = None,
    out: str | Path | None = None,
    steps: int | None = None,
    start_lr: float | None = None,
    end_lr: float | None = None,
    settings: RunConfig | None = None,
    **options: Any,
) -> LrFinding:
    """The learning-rate finder on what :func:`train` with the same options would train, as ``cnnlab lr-find``.

    Returns the finding: ``.lr`` (the pick), ``.rule``, ``.lrs``/``.losses`` (the curve) and ``.folder``
    (where lr_find.png and lr_find.json went). ``settings``: a checked RunConfig instead of the options.
    """
    from cnnlab.errors import CnnlabError
    from cnnlab.training.find_rate import find_rate
    from cnnlab.training.lr_finder import END_LR, START_LR, STEPS

    start_lr, end_lr = start_lr or START_LR, end_lr or END_LR
    if not start_lr < end_lr:  # before any image is decoded
        raise CnnlabError(f"the finder's rates must grow: --start-lr {start_lr:g} must be below --end-lr {end_lr:g}")
    run_config = settings or configure(data, recipe=recipe, config=config, augment=augment, **options)
    finding, files = find_rate(run_config, out, steps or STEPS, start_lr, end_lr)
    finding.folder = files.root
    return finding


def label_issues(
    data: str | Path | None = None,
    *,
    folds: int = 5,
    gallery: int = 24,
    out: str | Path | None = None,
    copy_to: str | Path | None = None,
    recipe: str | None = None,
    config: str | Path | None = None,
    augment: str | None = None,
    settings: RunConfig | None = None,
    **options: Any,
) -> LabelIssues:
    """Images whose label is probably wrong, as ``cnnlab data label-issues``: ``.rows`` (best suspects first:
    path, split, given and suggested label, confidence, why), ``.table`` (a DataFrame) and ``.folder``
    (label_issues.csv, .png, .html). ``options`` are run options (``model=``, ``pretrained=``, ``epochs=``...)."""
    from cnnlab.cleaning.issues import find_label_issues

    run_config = settings or configure(data, recipe=recipe, config=config, augment=augment, **options)
    return find_label_issues(run_config, out, folds, gallery, copy_to)


def tune(
    data: str | Path | None = None,
    *,
    time_budget: float | None = None,
    out: str | Path | None = None,
    trial_budget: float | None = None,
    trials: int | None = None,
    recipe: str | None = None,
    config: str | Path | None = None,
    augment: str | None = None,
    settings: RunConfig | None = None,
    command: str | None = None,
    **options: Any,
) -> TuneResult:
    """Searches the options that matter within ``time_budget`` seconds, as ``cnnlab tune``.

    ``options`` describe trial 0 and the ranges (``model=``, ``pretrained=``, ``epochs=``...). Returns the
    trials (``.trials``), the best (``.best``, ``.best_config``, ``.test_accuracy``) and the files
    (``.files.best_yaml`` for ``cnnlab train --config``). The same call continues a stopped search.
    """
    from cnnlab.errors import CnnlabError
    from cnnlab.training.run_dir import default_name
    from cnnlab.tuning.study import tune as run_search

    run_config = settings or configure(data, recipe=recipe, config=config, augment=augment, **options)
    budget = time_budget if time_budget is not None else run_config.train.time_budget
    if budget is None:
        raise CnnlabError("tune needs a time budget: time_budget=SECONDS (--time-budget), for the whole search")
    folder = Path(out) if out is not None else Path("tune") / default_name(run_config)
    call = command or f"cnnlab.tune({run_config.data.source!r}, time_budget={budget!r})"
    return run_search(run_config, folder, float(budget), trial_budget, trials, call)


def load_run(path: str | Path) -> Run:
    """Reopens a run folder (``runs/<name>``).

    Raises:
        CnnlabError: when the folder is missing or not a cnnlab run.
    """
    return Run(path)


def evaluate(
    run: Run | str | Path, data: str | Path | None = None, threads: int = DEFAULT_THREADS, tta: bool = False
) -> dict[str, Any]:
    """Scores a run on its own test split, or on another folder or built-in set, as ``cnnlab evaluate``.

    Results for other data go to ``<run>/eval/<data>/``; returns the metrics dict (with ``tta=True``
    also its ``tta`` entry: the scores with test-time augmentation, the views and time per image).
    """
    return (run if isinstance(run, Run) else Run(run)).evaluate(data, threads, tta)


def predict(
    run: Run | str | Path,
    images: ImageLike | Sequence[ImageLike],
    top_k: int = DEFAULT_TOP_K,
    runtime: str = "auto",
    threads: int = DEFAULT_THREADS,
    tta: bool = False,
) -> list[dict[str, Any]]:
    """Top-k classes of images with a run's model (see :meth:`Run.predict`), or with a ``.onnx`` /
    TorchScript file written by ``cnnlab export`` on its own; ``tta`` averages test-time views."""
    from cnnlab.deploy.predict import predict_with

    options = PredictOptions.of({"top_k": top_k, "runtime": runtime, "threads": threads, "tta": tta}, "predict")
    return predict_with(run.path if isinstance(run, Run) else run, items_of(images), options)


def compare(
    models: Sequence[str],
    data: str | Path | None = None,
    *,
    recipe: str | None = None,
    config: str | Path | None = None,
    augment: str | None = None,
    threads: int | None = None,
    repeats: int | None = None,
    weights: dict[str, str] | None = None,
    out: str | Path | None = None,
    **options: Any,
) -> Comparison:
    """Measures architectures side by side (parameters, MACs, size, latency, throughput, memory, cited
    ImageNet top-1) and, given ``data``, trains each the same way on it, as ``cnnlab compare``.

    ``options`` are run options by flag name (``image_size=160``, ``epochs=3``, ``pretrained=True``).
    The result shows its table and charts in Jupyter; ``.rows`` holds every figure, ``.folder`` the files.
    """
    from cnnlab.comparison.options import DEFAULT_REPEATS, compare_models

    if data is not None:
        options["data"] = str(data)
    call = ", ".join([repr(list(models))] + [f"{k}={v!r}" for k, v in options.items()])
    return compare_models(
        list(models),
        options,
        recipe=recipe,
        config=config,
        augment=augment,
        threads=threads,
        repeats=repeats or DEFAULT_REPEATS,
        weights=weights,
        out=out,
        command=f"cnnlab.compare({call})",
    )


def distill(
    teacher: Run | str | Path,
    student: str = PRUNED_STUDENT,
    *,
    temperature: float | None = None,
    alpha: float | None = None,
    student_sparsity: float = STUDENT_SPARSITY,
    force: bool = False,
    recipe: str | None = None,
    config: str | Path | None = None,
    augment: str | None = None,
    threads: int = DEFAULT_THREADS,
    **options: Any,
) -> Run:
    """Trains ``student`` alone and from the teacher run's soft targets, and compares the three, as
    ``cnnlab distill``; returns the distilled run (its report holds the comparison table).

    ``student="pruned"`` (the default) is the teacher with ``student_sparsity`` of its channels
    removed, starting from its weights. A student neither smaller nor faster than the teacher is
    refused unless ``force``; one no better than the most common class is logged as failed.
    """
    from cnnlab.deploy.distill_run import distill as distill_run

    path = str(teacher.path if isinstance(teacher, Run) else teacher)
    settings = {
        "temperature": temperature,
        "alpha": alpha,
        "student_sparsity": student_sparsity,
        "force": force,
        "threads": threads,
    }
    result = distill_run(
        path,
        {**options, "model": student},
        DistillOptions.of(settings, "distill"),
        recipe,
        None if config is None else str(config),
        augment,
        f"cnnlab.distill({path!r}, {student!r})",
    )
    return Run(result.files.root)


def serve(run: Run | str | Path, **options: Any) -> None:
    """Serves a run (with the runtime ``runtime`` picks, as predict) or an exported model over HTTP until
    Ctrl-C, as ``cnnlab serve``.

    ``options`` are the options of ``cnnlab serve`` by their flag names, with its defaults and checks
    (``serving.settings.ServeSettings``): ``host``, ``port``, ``max_upload_mb``, ``max_files``,
    ``batching``, ``max_batch``, ``batch_window_ms``, ``runtime``, ``threads``, ``api_key_file``,
    ``cors_origins`` (one origin or a list; ``cors_origin`` as the flag says it), ``ssl_certfile``,
    ``ssl_keyfile``, ``max_queue``, ``request_timeout``, ``access_log``.
    Blocks; the page is at ``http://HOST:PORT/``, the API at ``/predict``, ``/health`` and ``/docs``.
    The API key comes from ``api_key_file`` or the ``CNNLAB_API_KEY`` environment variable, never
    from an argument (it would sit in the notebook or script, as a flag would in shell history).

    Raises:
        CnnlabError: a bad option, key file or TLS pair, no usable model, or the address is taken.
    """
    import dataclasses

    from cnnlab.serving.server import serve as run_server

    if "cors_origin" in options:  # the flag's name: --cors-origin, once per site
        options["cors_origins"] = options.pop("cors_origin")
    settings = serving.ServeSettings.of(options, "serve")
    api_key, key_source = serving.read_api_key(settings.api_key_file)
    warning = serving.key_file_warning(settings.api_key_file)
    settings = dataclasses.replace(settings, api_key=api_key, key_source=key_source)
    run_server(run.path if isinstance(run, Run) else run, settings, notes=[warning] if warning else [])
