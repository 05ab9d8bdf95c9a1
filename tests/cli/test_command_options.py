"""The options of serve, the deploy commands and explain are declared once (``CommandOptions``): the flags
come from the declaration, and a bad value gets the same one-line message from the CLI and the Python API."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cnnlab
from cnnlab.cli.main import build_parser
from cnnlab.config.schema import command_specs
from cnnlab.deploy.settings import (
    BenchmarkOptions,
    DistillOptions,
    ExportOptions,
    PredictOptions,
    PruneOptions,
    QuantizeOptions,
)
from cnnlab.errors import CnnlabError
from cnnlab.explain.settings import ConvOptions, FeatureMapsOptions, FiguresOptions, GradcamOptions, PoolOptions
from cnnlab.serving.settings import ServeSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COMMANDS = [
    (["serve"], ServeSettings),
    (["predict"], PredictOptions),
    (["export"], ExportOptions),
    (["quantize"], QuantizeOptions),
    (["prune"], PruneOptions),
    (["distill"], DistillOptions),
    (["benchmark"], BenchmarkOptions),
    (["explain", "conv"], ConvOptions),
    (["explain", "pool"], PoolOptions),
    (["explain", "filters"], FiguresOptions),
    (["explain", "feature-maps"], FeatureMapsOptions),
    (["explain", "gradcam"], GradcamOptions),
    (["explain", "receptive-field"], FiguresOptions),
]


@pytest.mark.parametrize("path, options", COMMANDS, ids=[" ".join(c[0]) for c in COMMANDS])
def test_every_declared_option_is_a_flag_with_its_help(path: list[str], options: type) -> None:
    parser = build_parser().subcommand(path)
    actions = {flag: action for action in parser._actions for flag in action.option_strings}
    for spec in command_specs(options):
        assert spec.flag in actions, f"{' '.join(path)} has no {spec.flag}"
        assert actions[spec.flag].help.startswith(spec.help)  # the declared text, with its default after it
        assert actions[spec.flag].dest == spec.name


def _run(trained_shapes: tuple[Path, Path]) -> cnnlab.Run:
    return cnnlab.load_run(trained_shapes[0])


# (case, CLI arguments after the command, the same through Python, words the message holds).
# {run} and {image} are a trained run folder and one of its images; every bad value is refused before
# the model loads, so none of these trains or scores anything.
BAD_VALUES: list[tuple[str, list[str], Callable[[cnnlab.Run, Path], Any], str]] = [
    ("serve port", ["serve", "{run}", "--port", "70000"], lambda r, i: cnnlab.serve(r, port=70000), "--port"),
    (
        "serve runtime",
        ["serve", "{run}", "--runtime", "onx"],
        lambda r, i: cnnlab.serve(r, runtime="onx"),
        "did you mean onnx?",
    ),
    (
        "serve limits",
        ["serve", "{run}", "--max-upload-mb", "0"],
        lambda r, i: cnnlab.serve(r.path, max_upload_mb=0),
        "--max-upload-mb must be greater than 0",
    ),
    (
        "predict top-k",
        ["predict", "{run}", "{image}", "--top-k", "0"],
        lambda r, i: cnnlab.predict(r, [i], top_k=0),
        "--top-k must be at least 1, got 0",
    ),
    (
        "predict runtime (Run)",
        ["predict", "{run}", "{image}", "--runtime", "int4"],
        lambda r, i: r.predict([i], runtime="int4"),
        "--runtime must be one of auto, fastest",
    ),
    ("export tolerance", ["export", "{run}", "--tolerance", "-1"], lambda r, i: r.export(tolerance=-1), "--tolerance"),
    ("export format", ["export", "{run}", "--format", "tflite"], lambda r, i: r.export(format="tflite"), "--format"),
    (
        "quantize calibration",
        ["quantize", "{run}", "--calibration", "0"],
        lambda r, i: r.quantize(calibration=0),
        "--calibration must be at least 1",
    ),
    (
        "prune sparsity",
        ["prune", "{run}", "--sparsity", "-0.2"],
        lambda r, i: r.prune(sparsity=-0.2),
        "--sparsity must be between 0 and 1 (exclusive), got -0.2",
    ),
    (
        "prune fine-tuning",
        ["prune", "{run}", "--sparsity", "0.5", "--finetune-epochs", "-1"],
        lambda r, i: r.prune(sparsity=0.5, finetune_epochs=-1),
        "--finetune-epochs must be at least 0",
    ),
    ("prune threads", ["prune", "{run}", "--threads", "-2"], lambda r, i: r.prune(threads=-2), "--threads"),
    ("benchmark rounds", ["benchmark", "{run}", "--rounds", "0"], lambda r, i: r.benchmark(rounds=0), "--rounds"),
    (
        "distill alpha",
        ["distill", "--teacher", "{run}", "--alpha", "1.5"],
        lambda r, i: cnnlab.distill(r, alpha=1.5),
        "--alpha must be between 0 and 1, got 1.5",
    ),
    ("explain pool size", ["explain", "pool", "--size", "1"], lambda r, i: cnnlab.explain.pool(size=1), "--size"),
    (
        "explain gradcam method",
        ["explain", "gradcam", "{run}", "{image}", "--method", "gradcm"],
        lambda r, i: cnnlab.explain.gradcam(r, i, method="gradcm"),
        "did you mean gradcam?",
    ),
    (
        "explain gradcam class with eigencam",
        ["explain", "gradcam", "{run}", "{image}", "--method", "eigencam", "--class", "left"],
        lambda r, i: cnnlab.explain.gradcam(r, i, method="eigencam", class_name="left"),
        "--class has no effect with --method eigencam",
    ),
]


@pytest.mark.parametrize("case, args, call, words", BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_a_bad_value_gets_the_same_message_from_the_cli_and_the_api(
    cli, trained_shapes, case: str, args: list[str], call: Callable[..., Any], words: str
) -> None:
    run, shapes = trained_shapes
    image = shapes / "left" / "img_000.png"
    code, out, err = cli(*[a.format(run=run, image=image) for a in args])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "serving" not in out and "wrote" not in out  # refused before any work
    with pytest.raises(CnnlabError) as raised:
        call(_run(trained_shapes), image)
    message = str(raised.value)
    assert words in message
    assert err.strip().endswith(f": error: {message}")  # the CLI prints exactly what the API raises
    assert not (run / "model.onnx").exists() and not (run / "pruned").exists()  # refused before any work


def test_a_mistyped_keyword_is_named_with_the_closest_option() -> None:
    with pytest.raises(CnnlabError, match=re.escape("unknown option 'prot'; did you mean port?")):
        cnnlab.serve("no-such-run", prot=8080)
    with pytest.raises(CnnlabError, match="unknown option 'cors_orign'; did you mean cors_origin"):
        cnnlab.serve("no-such-run", cors_orign="https://app.example.com")


def test_none_keeps_the_default_and_paths_are_text() -> None:
    assert ExportOptions.of({"tolerance": None, "threads": 2}, "export") == ExportOptions(threads=2)
    assert ServeSettings.of({"ssl_certfile": Path("c.pem"), "ssl_keyfile": Path("k.pem")}, "serve").tls
    assert PruneOptions.of({"finetune_lr": None}, "prune").finetune_lr is None  # None is its own value here
