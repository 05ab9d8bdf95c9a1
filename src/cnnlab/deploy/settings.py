"""The deploy commands' names and defaults, with the measurements behind them.

Kept free of heavy imports, so the CLI builds its help from them without loading torch.
"""

from __future__ import annotations

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
RUNTIME_CHOICES = ("auto", "fastest", *RUNTIMES)
RUNTIME_HELP = (
    "auto: the run's fastest runtime with the checkpoint's own outputs (PyTorch, TorchScript or ONNX "
    "FP32); fastest: INT8 too when cnnlab benchmark/quantize measured it within 1 point of test "
    "accuracy; or one of pytorch, torchscript, onnx, int8 (default: auto)"
)
# 0: cnnlab's thread policy (cnnlab.threads): the cores other processes leave free, re-checked
# while the command runs. One thread is what it picks under load: EfficientNet-Lite0 in ONNX Runtime
# at batch 1 took 9.4 ms with 1 thread vs 14.2 ms with 2 while another job held a core.
DEFAULT_THREADS = 0
THREADS_HELP = (
    "CPU threads (default: 0 = auto, the cores other processes leave free, re-checked while the "
    "command runs; N pins it)"
)
ACCURACY_TOLERANCE = 0.01  # INT8 losing more than 1 point of test accuracy is never picked by itself
EXPORT_FORMATS = ("onnx", "torchscript")
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
