"""The server's limits and defaults, free of heavy imports so the CLI builds its help from them."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"  # loopback: reachable from other machines only when asked with --host
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 10.0
DEFAULT_MAX_FILES = 16
# Batching pays only when the model scores a batch faster per image than single images, which on
# this 2-core CPU holds for the MNIST CNN but not for EfficientNet-Lite0 at 224 px in either PyTorch
# or ONNX Runtime (bench/out/serve.md). So "auto" times both at start and decides.
BATCHING = ("auto", "on", "off")
BATCHING_GAIN = 0.8  # auto batches when a batch costs at most 80% per image of one image alone
DEFAULT_MAX_BATCH = 16
# No waiting for company by default: requests that queue while the model runs are batched anyway,
# and a 5 ms window cost 11% of the requests/s of the MNIST CNN (bench/out/serve_window.md).
DEFAULT_BATCH_WINDOW_MS = 0.0
DEFAULT_TOP_K = 5
GRACEFUL_SECONDS = 30  # Ctrl-C / SIGTERM: requests in flight get this long to finish


@dataclass(frozen=True)
class ServeSettings:
    """How one server listens, what it accepts and how it batches."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port (the URL printed at start names it)
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    max_files: int = DEFAULT_MAX_FILES
    batching: str = "auto"  # one of BATCHING
    max_batch: int = DEFAULT_MAX_BATCH
    batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS
    threads: int = 0  # 0: cnnlab's thread policy (cnnlab.threads)
    runtime: str = "auto"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
