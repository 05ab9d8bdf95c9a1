"""The deploy commands' options, names and defaults, with the measurements behind them.

Each command's options are declared once, as a ``CommandOptions`` dataclass (``ExportOptions``,
``PruneOptions``, ...): the CLI builds its flags from it and the Python API creates it, so both
accept the same values and refuse the others with the same message. Kept free of heavy imports, so
the CLI builds its help from them without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from cnnlab.config.schema import CommandOptions, option

# A runtime's one name (what --runtime takes and what every prediction says answered it): its label.
RUNTIMES = {
    "pytorch": "PyTorch eager",
    "torchscript": "TorchScript",
    "onnx": "ONNX Runtime FP32",
    "int8": "ONNX Runtime INT8",
}
# The runtimes that give the checkpoint's own outputs: export keeps an artifact only when its logits
# match the checkpoint's (PARITY_TOLERANCE). INT8 does not: on 224 px photos it moved a probability
# from 98.1% to 89.3% and flipped a class, with test accuracy within a point.
EXACT_RUNTIMES = ("pytorch", "torchscript", "onnx")
# auto: the fastest exact runtime, so a prediction is what the report, evaluate and Grad-CAM say;
# fastest: INT8 too, when its measured test accuracy is within ACCURACY_TOLERANCE.
RuntimeChoice = Literal["auto", "fastest", "pytorch", "torchscript", "onnx", "int8"]
RUNTIME_CHOICES: tuple[str, ...] = get_args(RuntimeChoice)
assert RUNTIME_CHOICES == ("auto", "fastest", *RUNTIMES)
RUNTIME_HELP = (
    "auto: the run's fastest runtime with the checkpoint's own outputs (PyTorch, TorchScript or ONNX "
    "FP32); fastest: INT8 too when cnnlab benchmark/quantize measured it within 1 point of test "
    "accuracy; or one of pytorch, torchscript, onnx, int8 (default: auto)"
)
# 0: cnnlab's thread policy (cnnlab.threads): the cores other processes leave free, re-checked
# while the command runs. One thread is what it picks under load: EfficientNet-Lite0 in ONNX Runtime
# at batch 1 took 9.4 ms with 1 thread vs 14.2 ms with 2 while another job held a core.
DEFAULT_THREADS = 0
PruneRanking = Literal["global", "layer"]  # cnnlab prune --ranking (deploy.prune_network.prune_channels)
THREADS_HELP = (
    "CPU threads (default: 0 = auto, the cores other processes leave free, re-checked while the "
    "command runs; N pins it)"
)
TTA_HELP = (  # predict's --tta and evaluate's
    "test-time augmentation: average each image's probabilities over its mirror image and, where the run "
    "stores images larger than the model's input, 5 crops each mirrored (10 views); costs that many passes"
)
ACCURACY_TOLERANCE = 0.01  # INT8 losing more than 1 point of test accuracy is never picked by itself
ExportFormat = Literal["onnx", "torchscript"]
PARITY_TOLERANCE = 1e-3  # max |logit difference|; float32 graph rewrites give ~1e-5 on Lite0, 1e-7 on small CNNs
# cnnlab prune. A pruned model losing more than MAX_DROP points of test accuracy (or --max-drop), or
# less than MIN_SPEEDUP times faster at batch 1 than its parent, is reported as such (issue #29's goal:
# <= 2 points, >= 1.3x; 1.1x leaves room for a shared machine's noise before calling it "no faster").
MAX_DROP = 2.0
MIN_SPEEDUP = 1.1
# Fine-tuning after pruning stops once validation accuracy is back (within one image of the parent's),
# after FINETUNE_PATIENCE epochs without a lower validation loss, or at the epoch / time budget.
# Patience 3 stopped a pruned Lite0 on dtd10 at epoch 5 while its validation accuracy still rose
# (50, 52, 47, 54%) and its loss did not (more confident where wrong): 5 gives accuracy more room.
FINETUNE_EPOCHS = 15
FINETUNE_BUDGET = 600.0
FINETUNE_PATIENCE = 5
# Every layer trains, so activations are kept for all of them: 27 MB per 224-px image for a pruned
# Lite0, 3.4 GB at the batch of 128 a transfer run's head trained with (a fine-tuning process was
# killed for memory on a shared 23 GB machine). 32 fits, and gives 4x the steps per epoch.
FINETUNE_BATCH = 32
SWEEP_SPARSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # --max-drop bisects this grid
CALIBRATION_IMAGES = 512  # 256 calibrated EfficientNet-Lite0 as well as 512 (research notes)
# Classes per image that predict, the API and the server's page show, capped at the run's classes
# (a 2-class run shows 2): the ImageNet habit of top-5.
DEFAULT_TOP_K = 5
TEMPERATURE = 4.0
ALPHA = 0.7
# The student distill trains when none is named: the teacher with this share of its channels removed
# (Torch-Pruning), starting from the teacher's weights. It needs no download, and pruning then
# distilling is the pairing that recovers most of the teacher (see docs/deploy.md for the measurement).
PRUNED_STUDENT = "pruned"
STUDENT_SPARSITY = 0.5
# A student counts as faster only below this share of the teacher's batch-1 latency: a quick
# measurement on a shared machine moves by several per cent between runs.
FASTER_SHARE = 0.9

ROUNDS = 20  # batch-1 rounds of cnnlab benchmark (each a burst of calls, the first one not counted)


def threads_option() -> Any:
    """``--threads`` of every deploy and serve command (one declaration, one check)."""
    return option(DEFAULT_THREADS, THREADS_HELP, at_least=0)


def runtime_option() -> Any:
    """``--runtime`` of predict and serve."""
    return option("auto", RUNTIME_HELP)


@dataclass(frozen=True)
class PredictOptions(CommandOptions):
    """``cnnlab predict`` / ``cnnlab.predict`` / ``Run.predict``."""

    top_k: int = option(DEFAULT_TOP_K, "classes per image, at most the run's classes", at_least=1, metavar="N")
    runtime: RuntimeChoice = runtime_option()
    tta: bool = option(False, TTA_HELP)
    threads: int = threads_option()


@dataclass(frozen=True)
class ExportOptions(CommandOptions):
    """``cnnlab export`` / ``Run.export``."""

    format: ExportFormat = option(
        "onnx", "onnx (ONNX Runtime, fastest here) or torchscript (deprecated by PyTorch, kept for C++/mobile)"
    )
    tolerance: float = option(
        PARITY_TOLERANCE, "largest |logit difference| allowed against the checkpoint", above=0, metavar="X"
    )
    threads: int = threads_option()


@dataclass(frozen=True)
class QuantizeOptions(CommandOptions):
    """``cnnlab quantize`` / ``Run.quantize``."""

    calibration: int = option(CALIBRATION_IMAGES, "training images to calibrate on", at_least=1, metavar="N")
    threads: int = threads_option()


@dataclass(frozen=True)
class BenchmarkOptions(CommandOptions):
    """``cnnlab benchmark`` / ``Run.benchmark``."""

    rounds: int = option(ROUNDS, "interleaved timing rounds at batch 1", at_least=1, metavar="N")
    threads: int = threads_option()


@dataclass(frozen=True)
class PruneOptions(CommandOptions):
    """``cnnlab prune`` / ``Run.prune``: how much to prune, and the fine-tuning after it."""

    sparsity: float | None = option(
        None,
        "fraction to remove, between 0 and 1: of the network's channels (structured; --ranking says from "
        "which layers) or of all weights",
        above=0,
        below=1,
        metavar="X",
    )
    max_drop: float | None = option(
        None,
        "without --sparsity: the largest sparsity (10-80%%) that loses at most POINTS of validation "
        "accuracy, found by bisection and drawn as a curve; with it: the drop that is warned about "
        f"(default: {MAX_DROP:g})",
        at_least=0,
        metavar="POINTS",
    )
    structured: bool = option(
        True,
        "remove whole channels: a smaller, faster network; --no-structured (or --unstructured) zeroes single "
        "weights instead (same size and speed; for comparison)",
    )
    ranking: PruneRanking = option(
        "global",
        "which channels go: global ranks them across the whole network by their effect on the loss, so "
        "a layer keeps what it needs (at most 80%% of a layer goes, unless --sparsity asks more); layer "
        "removes the same share from every layer (Lite0 on dtd10 at 0.5: 80.4%% against 77.5%% test "
        "after fine-tuning, as fast)",
    )
    finetune_epochs: int = option(
        FINETUNE_EPOCHS,
        "most epochs of fine-tuning after pruning; it stops sooner once validation accuracy is back "
        "to the original's or stops improving, keeping its best epoch; 0: none",
        at_least=0,
        metavar="N",
    )
    finetune_budget: float | None = option(
        FINETUNE_BUDGET, "most seconds of fine-tuning for each pruned model", above=0, metavar="SECONDS"
    )
    finetune_lr: float | None = option(
        None,
        "learning rate of that fine-tuning, every layer training (default: the run's stage-2 --finetune-lr "
        "when the pruned layers were refitted, as for Lite0 and other timm networks, since their BatchNorm "
        "statistics then stay fixed; else the run's --lr)",
        above=0,
        metavar="LR",
    )
    threads: int = threads_option()


@dataclass(frozen=True)
class DistillOptions(CommandOptions):
    """``cnnlab distill`` / ``cnnlab.distill``: the teacher term and the default student (the student's
    training options are run options)."""

    temperature: float = option(TEMPERATURE, "softens both models' outputs for the teacher term", above=0, metavar="T")
    alpha: float = option(
        ALPHA, "weight of the teacher term; 1 - A goes to the labels", at_least=0, at_most=1, metavar="A"
    )
    student_sparsity: float = option(
        STUDENT_SPARSITY,
        f"--student {PRUNED_STUDENT}: the share of the teacher's channels removed, between 0 and 1",
        above=0,
        below=1,
        metavar="X",
    )
    force: bool = option(False, "go on with a student that is neither smaller nor faster than its teacher")
    threads: int = threads_option()
