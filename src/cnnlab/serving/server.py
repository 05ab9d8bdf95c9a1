"""Opens the model, binds the socket and runs uvicorn until Ctrl-C or SIGTERM.

The socket is bound here rather than by uvicorn so that a port in use or a bad host is a one-line
``CnnlabError`` (exit 2) before anything runs, and so that ``--port 0`` takes any free port and
the URL printed names it (the tests start servers this way). On a signal uvicorn stops accepting,
lets the requests in flight finish (up to ``GRACEFUL_SECONDS``), then the batcher stops.
The TLS pair is loaded before the model, so a bad certificate is an error in a second, not after
the model has loaded.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import uvicorn

from cnnlab.errors import CnnlabError
from cnnlab.serving.access_log import access_log
from cnnlab.serving.model import ServedModel, open_served
from cnnlab.serving.settings import BATCHING_GAIN, GRACEFUL_SECONDS, ServeSettings, check_tls
from cnnlab.threads import for_command

log = logging.getLogger("cnnlab")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one).

    Raises:
        CnnlabError: an unknown host, or the port is in use or not allowed.
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise CnnlabError(
            f"--host '{host}' is not an address of this machine ({exc.strerror}); "
            "use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
        ) from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise CnnlabError(
            f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port (--port 0 takes any free one)"
        ) from None
    sock.set_inheritable(True)
    return sock


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def url_of(sock: socket.socket, tls: bool = False) -> str:
    host, port = sock.getsockname()[:2]
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def exposure_warnings(settings: ServeSettings) -> list[str]:
    """What a server reachable from other machines leaves open, one warning line each (none on loopback)."""
    if is_loopback(settings.host):
        return []
    where = f"listening on {settings.host}"
    if settings.api_key is None:
        return [
            (
                f"warning: {where} without an API key: anyone who can reach this machine can use the model; "
                "set CNNLAB_API_KEY or give --api-key-file (README: Serving to other machines)"
            )
        ]
    if not settings.tls:
        return [
            (
                f"warning: {where} over plain HTTP: the API key and the images cross the network unencrypted, "
                "readable by anyone on the way; give --ssl-certfile and --ssl-keyfile"
            )
        ]
    return []


def _log_access_to_stdout() -> None:
    """Access lines on stdout as uvicorn prints its own (once per process, whatever the servers)."""
    if not any(getattr(h, "_cnnlab", False) for h in access_log.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("INFO:     %(message)s"))  # uvicorn's prefix; every line is INFO
        handler._cnnlab = True  # type: ignore[attr-defined]
        access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


def choose_batching(model: ServedModel, settings: ServeSettings) -> tuple[ServeSettings, str]:
    """The settings with the batch size to use, and a line saying why (``auto`` measures the model)."""
    if settings.batching == "off" or settings.max_batch == 1:
        return replace(settings, max_batch=1), "off (one image per inference call)"
    on = f"up to {settings.max_batch} images per call, {settings.batch_window_ms:g} ms window"
    if settings.batching == "on":
        return settings, on
    single, batched = model.batch_timing(min(settings.max_batch, 8))
    measured = f"{batched:.2f} ms per image in a batch vs {single:.2f} ms alone"
    if batched <= BATCHING_GAIN * single:
        return settings, f"{on} (auto: {measured})"
    return replace(settings, max_batch=1), f"off (auto: {measured}; --batching on forces it)"


def _say(line: str) -> None:
    print(line, flush=True)  # at once, also into a pipe or a log file (where print alone waits for 8 KB)


def serve(
    target: str | Path, settings: ServeSettings, announce: Callable[[str], None] = _say, notes: Sequence[str] = ()
) -> None:
    """Serves a run folder (the runtime ``settings.runtime`` picks) or an exported artifact until Ctrl-C or SIGTERM.

    Args:
        announce: told each line for the user once the server listens (URL, model, runtime).
        notes: more lines for the user (a warning about the key file), told before the warnings.

    Raises:
        CnnlabError: no usable model at ``target``, or the address cannot be listened on.
    """
    from cnnlab.serving.app import create_app

    check_tls(settings)
    model = open_served(target, settings.runtime, settings.threads)
    for_command(settings.threads)  # cnnlab's thread policy; ONNX Runtime sessions fixed theirs at opening
    settings, batching = choose_batching(model, settings)
    sock = bind(settings.host, settings.port)
    if settings.access_log:
        _log_access_to_stdout()
    # uvicorn's access log stays off: it has no latency, and ours (access_log.AccessLog) replaces it.
    config = uvicorn.Config(
        create_app(model, settings, batching),
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        server_header=False,
        ssl_certfile=settings.ssl_certfile,
        ssl_keyfile=settings.ssl_keyfile,
    )
    server = _Server(config)
    url = url_of(sock, settings.tls)
    served = model.served
    announce(f"serving {served.source} on {url}  (page: {url}/, API docs: {url}/docs)")
    announce(f"runtime: {served.describe()}; {model.why}")
    announce(f"batching: {batching}; uploads up to {settings.max_upload_mb:g} MB and {settings.max_files} files")
    announce(
        f"queue: at most {settings.max_queue} requests wait for the model (more get 503 at once), each "
        f"answered within {settings.request_timeout:g} s (else 504)"
    )
    key = f"API key required (from {settings.key_source})" if settings.api_key is not None else "no API key"
    cors = ", ".join(settings.cors_origins) or "none (same-origin page only)"
    announce(f"access: {key}; {'HTTPS' if settings.tls else 'plain HTTP'}; cross-origin pages allowed: {cors}")
    for warning in [*notes, *exposure_warnings(settings)]:
        announce(warning)
    announce("Ctrl-C stops (requests in flight finish first)")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    announce("stopped")


class _Server(uvicorn.Server):
    """uvicorn's server, ending with exit code 0 after a graceful stop on a signal.

    uvicorn re-raises the signal once shut down (so a SIGTERM ends the process as killed, and a
    Ctrl-C as a KeyboardInterrupt traceback); a requested stop is the normal end of a server.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)
