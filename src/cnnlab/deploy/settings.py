"""The deploy commands' names and defaults, with the measurements behind them.

Kept free of heavy imports, so the CLI builds its help from them without loading torch.
"""

from __future__ import annotations

RUNTIMES = {"pytorch": "PyTorch eager", "torchscript": "TorchScript", "onnx": "ONNX Runtime FP32",
            "int8": "ONNX Runtime INT8"}
# On this shared 2-core machine one thread beat two for every runtime (bench/out/deploy.md and
# the research notes: Lite0 in ONNX Runtime FP32 at batch 1, 9.4 ms with 1 thread vs 14.2 ms with
# 2; PyTorch eager at batch 32 on the MNIST CNN, 7.8 ms vs 174 ms): a second thread waits for a
# core another job holds.
DEFAULT_THREADS = 1
THREADS_HELP = ("threads for inference (default: 1; on this shared 2-core machine 1 thread measured faster "
                "than 2: EfficientNet-Lite0 in ONNX Runtime took 9.4 ms per image with 1 thread, 14.2 ms with 2)")
ACCURACY_TOLERANCE = 0.01  # an artifact losing more than 1 point of test accuracy is never picked by itself
EXPORT_FORMATS = ("onnx", "torchscript")
PARITY_TOLERANCE = 1e-3  # max |logit difference|; float32 graph rewrites give ~1e-5 on Lite0, 1e-7 on small CNNs
CALIBRATION_IMAGES = 512  # 256 calibrated EfficientNet-Lite0 as well as 512 (research notes)
TEMPERATURE = 4.0
ALPHA = 0.7
