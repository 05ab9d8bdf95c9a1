"""The server's limits and defaults, free of heavy imports so the CLI builds its help from them."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"  # loopback: reachable from other machines only when asked with --host
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 10.0
DEFAULT_MAX_FILES = 16
# Batching: 16 images per call and a 5 ms window measured best here for EfficientNet-Lite0 with 16
# clients (bench/out/serve.md); one client waits at most the window for company.
DEFAULT_MAX_BATCH = 16
DEFAULT_BATCH_WINDOW_MS = 5.0
DEFAULT_TOP_K = 5
GRACEFUL_SECONDS = 30  # Ctrl-C / SIGTERM: requests in flight get this long to finish


@dataclass(frozen=True)
class ServeSettings:
    """How one server listens, what it accepts and how it batches."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port (the URL printed at start names it)
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    max_files: int = DEFAULT_MAX_FILES
    max_batch: int = DEFAULT_MAX_BATCH  # 1: one image at a time (batching off)
    batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS
    threads: int = 1
    runtime: str = "auto"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
