"""``cnnlab serve RUN|ARTIFACT``: the model behind an HTTP API and a web page until Ctrl-C."""

from __future__ import annotations

import argparse
from typing import Any

from cnnlab.cli.options import add_command_options, given_options
from cnnlab.config.schema import command_specs
from cnnlab.serving.settings import ServeSettings

# These flags get their own group in --help, as in the README's "Serving to other machines".
REMOTE_OPTIONS = (
    "api_key_file",
    "cors_origins",
    "ssl_certfile",
    "ssl_keyfile",
    "max_queue",
    "request_timeout",
    "access_log",
)


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
    add_command_options(p, ServeSettings, leave_out=REMOTE_OPTIONS)
    reach = p.add_argument_group("serving to other machines (README: Serving to other machines)")
    add_command_options(reach, ServeSettings, only=REMOTE_OPTIONS)
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from cnnlab.api import serve

    serve(args.run, **given_options(args, command_specs(ServeSettings)))
    return 0
