"""The deploy commands' names and defaults, with the measurements behind them.

Kept free of heavy imports, so the CLI builds its help from them without loading torch.
"""

from __future__ import annotations

RUNTIMES = {"pytorch": "PyTorch eager", "torchscript": "TorchScript", "onnx": "ONNX Runtime FP32",
            "int8": "ONNX Runtime INT8"}
# 0: cnnlab's thread policy (cnnlab.threads): the cores other processes leave free, re-checked
# while the command runs. One thread is what it picks under load: EfficientNet-Lite0 in ONNX Runtime
# at batch 1 took 9.4 ms with 1 thread vs 14.2 ms with 2 while another job held a core.
DEFAULT_THREADS = 0
THREADS_HELP = ("CPU threads (default: 0 = auto, the cores other processes leave free, re-checked while the "
                "command runs; N pins it)")
ACCURACY_TOLERANCE = 0.01  # an artifact losing more than 1 point of test accuracy is never picked by itself
EXPORT_FORMATS = ("onnx", "torchscript")
PARITY_TOLERANCE = 1e-3  # max |logit difference|; float32 graph rewrites give ~1e-5 on Lite0, 1e-7 on small CNNs
CALIBRATION_IMAGES = 512  # 256 calibrated EfficientNet-Lite0 as well as 512 (research notes)
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
