"""The server's options, defaults and checks, free of heavy imports so the CLI builds its help from them.

``ServeSettings`` declares each option once (``option(...)``: default, bounds, help): ``cnnlab serve``
builds its flags from it, and every front end (``cnnlab serve``, ``cnnlab.serve``) creates one, whose
checks raise the same one-line ``CnnlabError`` naming the flag; ``read_api_key`` and ``check_tls`` read files,
so the API calls them once at start rather than on every ``replace``.
"""

from __future__ import annotations

import os
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from cnnlab.config.schema import CommandOptions, option
from cnnlab.deploy.settings import (
    DEFAULT_TOP_K,  # noqa: F401  the server's default k: predict's
    RuntimeChoice,
    runtime_option,
    threads_option,
)
from cnnlab.errors import CnnlabError

DEFAULT_HOST = "127.0.0.1"  # loopback: reachable from other machines only when asked with --host
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 10.0
DEFAULT_MAX_FILES = 16
# Batching pays only when the model scores a batch faster per image than single images, which on
# this 2-core CPU holds for the MNIST CNN but not for EfficientNet-Lite0 at 224 px in either PyTorch
# or ONNX Runtime (bench/out/serve.md). So "auto" times both at start and decides.
Batching = Literal["auto", "on", "off"]
BATCHING_GAIN = 0.8  # auto batches when a batch costs at most 80% per image of one image alone
DEFAULT_MAX_BATCH = 16
# No waiting for company by default: requests that queue while the model runs are batched anyway,
# and a 5 ms window cost 11% of the requests/s of the MNIST CNN (bench/out/serve_window.md).
DEFAULT_BATCH_WINDOW_MS = 0.0
GRACEFUL_SECONDS = 30  # Ctrl-C / SIGTERM: requests in flight get this long to finish
# Back-pressure. 64 waiting requests are under a second of queue at the measured 75 requests/s of
# Lite0 (bench/out/serve.md) and far more than the 16 clients of the benchmark, so only a real
# pile-up is refused; each waiting request holds at most one upload (spooled to disk past 1 MB).
DEFAULT_MAX_QUEUE = 64
# A whole request (upload, decoding, queue, inference) within 30 s: a client that trickles its upload
# cannot hold a queue place forever, and nobody waits minutes for an answer that is no longer wanted.
DEFAULT_REQUEST_TIMEOUT = 30.0
RETRY_AFTER_MAX_S = 60  # the Retry-After of a 503 is the queue's estimated drain time, capped
API_KEY_ENV = "CNNLAB_API_KEY"
# A key is a password the whole network may try: 16 characters of `openssl rand -hex 32` are
# out of reach of guessing; a short one is refused rather than trusted.
MIN_KEY_CHARS = 16
MAKE_KEY = "openssl rand -hex 32 > key.txt"


@dataclass(frozen=True)
class ServeSettings(CommandOptions):
    """How one server listens, who may use it, what it accepts, how it batches and how much may wait.

    Each option field is ``cnnlab serve``'s flag and ``cnnlab.serve``'s keyword, checked here for both.
    """

    host: str = option(
        DEFAULT_HOST, "address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 opens it to the network)"
    )
    port: int = option(
        DEFAULT_PORT, f"TCP port (default: {DEFAULT_PORT}; 0 takes any free port)", at_least=0, at_most=65535
    )
    max_upload_mb: float = option(
        DEFAULT_MAX_UPLOAD_MB, "largest request body, checked while it arrives", above=0, metavar="MB"
    )
    max_files: int = option(DEFAULT_MAX_FILES, "images per request", at_least=1, metavar="N")
    batching: Batching = option(
        "auto",
        "score concurrent requests' images together: auto times the model at start and batches only when a "
        "batch is cheaper per image on the serving machine (it says which at start: on a 2-core CPU, yes for "
        "the MNIST CNN, no for EfficientNet-Lite0)",
    )
    max_batch: int = option(DEFAULT_MAX_BATCH, "most images scored in one call when batching", at_least=1, metavar="N")
    batch_window_ms: float = option(
        DEFAULT_BATCH_WINDOW_MS,
        "how long an idle batcher waits for more requests to batch with the first; requests that queue "
        "while the model runs are batched anyway",
        at_least=0,
        metavar="MS",
    )
    runtime: RuntimeChoice = runtime_option()
    threads: int = threads_option()
    api_key_file: str | None = option(
        None,
        f"require the key in FILE (e.g. from '{MAKE_KEY}') on /predict and /explain, sent as 'Authorization: "
        f"Bearer KEY' or 'X-API-Key: KEY'; without it, the environment variable {API_KEY_ENV} if set. There is "
        "no flag taking the key itself: it would show in shell history and ps",
        metavar="FILE",
    )
    cors_origins: tuple[str, ...] = option(
        (),
        "let pages of this site (scheme://host[:port]) call the server from the browser; repeat for more "
        "sites (default: none, the server's own page needs no CORS)",
        flag="--cors-origin",
        metavar="URL",
    )
    ssl_certfile: str | None = option(
        None, "serve HTTPS with this PEM certificate (with --ssl-keyfile)", metavar="FILE"
    )
    ssl_keyfile: str | None = option(
        None, "the certificate's unencrypted PEM private key (with --ssl-certfile)", metavar="FILE"
    )
    max_queue: int = option(
        DEFAULT_MAX_QUEUE,
        "requests that may wait for the model; more are answered 503 with Retry-After at once",
        at_least=1,
        metavar="N",
    )
    request_timeout: float = option(
        DEFAULT_REQUEST_TIMEOUT,
        "seconds a request may take from arrival to answer (upload, queue, inference); past it, 504",
        above=0,
        metavar="S",
    )
    access_log: bool = option(
        True, "one line per request on stdout: client, method, path, status, latency; never headers or the key"
    )
    api_key: str | None = field(default=None, repr=False)  # never printed: repr() may reach a log
    key_source: str = ""  # where the key came from, for the start-up lines

    def __post_init__(self) -> None:
        super().__post_init__()  # the option fields: each against its declaration
        object.__setattr__(self, "cors_origins", tuple(dict.fromkeys(cors_origin(o) for o in self.cors_origins)))
        for name in ("ssl_certfile", "ssl_keyfile", "api_key_file"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(Path(value).expanduser()))
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            given, missing = (
                ("--ssl-certfile", "--ssl-keyfile") if self.ssl_keyfile is None else ("--ssl-keyfile", "--ssl-certfile")
            )
            raise CnnlabError(f"{given} needs {missing} too: HTTPS takes the certificate and its private key")
        if self.api_key is not None:
            check_key(self.api_key, self.key_source or "the API key")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def tls(self) -> bool:
        return self.ssl_certfile is not None


def check_key(key: str, source: str) -> None:
    """Raises CnnlabError unless ``key`` can be a bearer token: long enough, visible ASCII only."""
    if not key:
        raise CnnlabError(f"{source} is empty; put a key in it, e.g. {MAKE_KEY}")
    if any(not 33 <= ord(c) <= 126 for c in key):
        raise CnnlabError(
            f"{source} holds spaces or characters other than visible ASCII, which an HTTP header "
            f"cannot carry; use letters and digits, e.g. {MAKE_KEY}"
        )
    if len(key) < MIN_KEY_CHARS:
        raise CnnlabError(
            f"{source} is {len(key)} characters, under the {MIN_KEY_CHARS} a key needs not to be "
            f"guessed; make a longer one, e.g. {MAKE_KEY}"
        )


def read_api_key(api_key_file: str | Path | None, environ: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """(key, where it came from): ``--api-key-file`` first, else ``$CNNLAB_API_KEY``, else (None, "").

    The file's surrounding white space (its final newline) is not part of the key.

    Raises:
        CnnlabError: the file cannot be read, or the key in it or in the variable is empty or unusable.
    """
    environ = os.environ if environ is None else environ
    if api_key_file is not None:
        path = Path(api_key_file).expanduser()
        source = f"--api-key-file {path}"
        try:
            key = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
            raise CnnlabError(
                f"cannot read {source} ({reason}); give a readable file holding the key, e.g. {MAKE_KEY}"
            ) from None
        check_key(key, source)
        return key, source
    if API_KEY_ENV in environ:
        source = f"${API_KEY_ENV}"
        key = environ[API_KEY_ENV].strip()
        if not key:  # set but empty: serving without a key was not what was meant
            raise CnnlabError(
                f"{source} is set but empty; put the key in it (e.g. export {API_KEY_ENV}=$(openssl "
                f"rand -hex 32)) or unset it to serve without a key"
            )
        check_key(key, source)
        return key, source
    return None, ""


def key_file_warning(api_key_file: str | Path | None) -> str | None:
    """A warning when the key file can be read by other users of this machine (like ssh's key check)."""
    if api_key_file is None:
        return None
    path = Path(api_key_file).expanduser()
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return f"warning: {path} can be read by other users of this machine; chmod 600 {path}"
    return None


def cors_origin(text: str) -> str:
    """``text`` as the Origin a browser sends (scheme://host[:port], lower case, no default port).

    Raises:
        CnnlabError: not an http(s) origin, a path or query given, or '*'.
    """
    if text.strip() == "*":
        raise CnnlabError(
            "--cors-origin '*' would let every web site a user visits use the model; name each "
            "site that may, e.g. --cors-origin https://app.example.com"
        )
    parts = urlsplit(text.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or port == -1
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
    ):
        raise CnnlabError(
            f"--cors-origin '{text}' is not an origin; give the scheme, host and port of the "
            "site whose pages call this server, e.g. https://app.example.com or http://localhost:5173"
        )
    scheme = parts.scheme.lower()
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def check_tls(settings: ServeSettings) -> None:
    """Loads the certificate and key as the server will, so a bad pair is an error before the model loads.

    Raises:
        CnnlabError: a file cannot be read, is not PEM, the key is encrypted or does not match.
    """
    if not settings.tls:
        return
    for flag, name in (("--ssl-certfile", settings.ssl_certfile), ("--ssl-keyfile", settings.ssl_keyfile)):
        try:
            Path(str(name)).open("rb").close()
        except OSError as exc:
            raise CnnlabError(f"cannot read {flag} {name} ({exc.strerror}); give a readable PEM file") from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        # An empty password: an encrypted key fails here instead of OpenSSL prompting on the terminal.
        context.load_cert_chain(str(settings.ssl_certfile), str(settings.ssl_keyfile), password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        raise CnnlabError(
            f"cannot use --ssl-certfile {settings.ssl_certfile} with --ssl-keyfile "
            f"{settings.ssl_keyfile} ({reason}); both must be PEM files, the key unencrypted and "
            "the certificate's own (see README, 'Serving to other machines')"
        ) from None
