"""``cnnlab serve RUN|ARTIFACT``: the model behind an HTTP API and a web page until Ctrl-C."""

from __future__ import annotations

import argparse
from typing import Any

from cnnlab.cli.parser import number_at_least, positive_int, thread_count
from cnnlab.deploy.settings import DEFAULT_THREADS, RUNTIME_CHOICES, RUNTIME_HELP, THREADS_HELP
from cnnlab.serving import settings as defaults


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 (any free port) to 65535, got {value}")
    return value


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a run or an exported model over HTTP, with a web page",
        description="Serves RUN (its fastest runtime with the checkpoint's own outputs, "
        "unless --runtime) or a .onnx / TorchScript file on http://HOST:PORT: a page to drop "
        "images on at /, POST /predict (multipart field 'image'), GET /health, API docs at "
        "/docs. Ctrl-C or SIGTERM stops it once the requests in flight have finished.",
    )
    p.add_argument("run", metavar="RUN", help="a run folder, or a .onnx / TorchScript file written by cnnlab export")
    p.add_argument(
        "--host",
        default=defaults.DEFAULT_HOST,
        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 opens it to the network)",
    )
    p.add_argument(
        "--port",
        type=_port,
        default=defaults.DEFAULT_PORT,
        help=f"TCP port (default: {defaults.DEFAULT_PORT}; 0 takes any free port)",
    )
    p.add_argument(
        "--max-upload-mb",
        dest="max_upload_mb",
        type=number_at_least(0, strict=True),
        default=defaults.DEFAULT_MAX_UPLOAD_MB,
        metavar="MB",
        help=f"largest request body, checked while it arrives (default: {defaults.DEFAULT_MAX_UPLOAD_MB:g})",
    )
    p.add_argument(
        "--max-files",
        dest="max_files",
        type=positive_int,
        metavar="N",
        default=defaults.DEFAULT_MAX_FILES,
        help=f"images per request (default: {defaults.DEFAULT_MAX_FILES})",
    )
    p.add_argument(
        "--batching",
        choices=defaults.BATCHING,
        default="auto",
        help="score concurrent requests' images together: auto times the model at start and batches "
        "only when a batch is cheaper per image on the serving machine (it says which at start: on a 2-core "
        "CPU, yes for the MNIST CNN, no for EfficientNet-Lite0) (default: auto)",
    )
    p.add_argument(
        "--max-batch",
        dest="max_batch",
        type=positive_int,
        metavar="N",
        default=defaults.DEFAULT_MAX_BATCH,
        help=f"most images scored in one call when batching (default: {defaults.DEFAULT_MAX_BATCH})",
    )
    p.add_argument(
        "--batch-window-ms",
        dest="batch_window_ms",
        type=number_at_least(0, strict=False),
        default=defaults.DEFAULT_BATCH_WINDOW_MS,
        metavar="MS",
        help="how long an idle batcher waits for more requests to batch with the first; requests "
        "that queue while the model runs are batched anyway "
        f"(default: {defaults.DEFAULT_BATCH_WINDOW_MS:g})",
    )
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto", help=RUNTIME_HELP)
    p.add_argument("--threads", type=thread_count, default=DEFAULT_THREADS, help=THREADS_HELP)
    reach = p.add_argument_group("serving to other machines (README: Serving to other machines)")
    reach.add_argument(
        "--api-key-file",
        dest="api_key_file",
        metavar="FILE",
        help=f"require the key in FILE (e.g. from '{defaults.MAKE_KEY}') on /predict and /explain, "
        "sent as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'; without it, the environment "
        f"variable {defaults.API_KEY_ENV} if set. There is no flag taking the key itself: it would "
        "show in shell history and ps",
    )
    reach.add_argument(
        "--cors-origin",
        dest="cors_origins",
        action="append",
        default=[],
        metavar="URL",
        help="let pages of this site (scheme://host[:port]) call the server from the browser; "
        "repeat for more sites (default: none, the server's own page needs no CORS)",
    )
    reach.add_argument(
        "--ssl-certfile",
        dest="ssl_certfile",
        metavar="FILE",
        help="serve HTTPS with this PEM certificate (with --ssl-keyfile)",
    )
    reach.add_argument(
        "--ssl-keyfile",
        dest="ssl_keyfile",
        metavar="FILE",
        help="the certificate's unencrypted PEM private key (with --ssl-certfile)",
    )
    reach.add_argument(
        "--max-queue",
        dest="max_queue",
        type=positive_int,
        metavar="N",
        default=defaults.DEFAULT_MAX_QUEUE,
        help="requests that may wait for the model; more are answered 503 with Retry-After at once "
        f"(default: {defaults.DEFAULT_MAX_QUEUE})",
    )
    reach.add_argument(
        "--request-timeout",
        dest="request_timeout",
        type=number_at_least(0, strict=True),
        metavar="S",
        default=defaults.DEFAULT_REQUEST_TIMEOUT,
        help="seconds a request may take from arrival to answer (upload, queue, inference); "
        f"past it, 504 (default: {defaults.DEFAULT_REQUEST_TIMEOUT:g})",
    )
    reach.add_argument(
        "--access-log",
        dest="access_log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one line per request on stdout: client, method, path, status, latency; never "
        "headers or the key (default: on)",
    )
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from cnnlab.api import serve

    serve(
        args.run,
        host=args.host,
        port=args.port,
        max_upload_mb=args.max_upload_mb,
        max_files=args.max_files,
        batching=args.batching,
        max_batch=args.max_batch,
        batch_window_ms=args.batch_window_ms,
        runtime=args.runtime,
        threads=args.threads,
        api_key_file=args.api_key_file,
        cors_origin=args.cors_origins,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        max_queue=args.max_queue,
        request_timeout=args.request_timeout,
        access_log=args.access_log,
    )
    return 0
