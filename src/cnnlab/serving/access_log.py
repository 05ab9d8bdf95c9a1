"""One access-log line per request, in uvicorn's format with the latency added, the key never in it.

    INFO:     192.168.1.7:51234 - "POST /predict?k=3 HTTP/1.1" 200 OK 14.2 ms

uvicorn's own access log has no latency, so it stays off and this ASGI middleware writes the lines
to the ``cnnlab.access`` logger (the server points it at stdout, as uvicorn's). Headers are never
logged; should a client put the key in the URL, it is replaced by ``[api-key]`` in the line.
"""

from __future__ import annotations

import http
import logging
import time
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("cnnlab.access")
HIDDEN = "[api-key]"  # no space: the line still splits into fields as uvicorn's do


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


class AccessLog:
    """ASGI middleware logging method, path, status, latency and client of every HTTP request."""

    def __init__(self, app: ASGIApp, api_key: str | None = None) -> None:
        self.app = app
        # The key as typed and as a URL would carry it (percent-encoded), both hidden from the log.
        self._hidden = sorted({api_key, quote(api_key, safe="")}, key=len, reverse=True) if api_key else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: list[int] = [500]  # what the client sees if the app fails before answering

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self._write(scope, status[0], (time.perf_counter() - started) * 1000)

    def _write(self, scope: Scope, status: int, ms: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        client = scope.get("client")
        who = f"{client[0]}:{client[1]}" if client else "-"
        path = quote(scope.get("root_path", "") + scope["path"])  # as uvicorn: a %0A cannot start a fake line
        query = scope.get("query_string", b"").decode("latin-1")
        target = f"{path}?{query}" if query else path
        request = f"{scope['method']} {target} HTTP/{scope.get('http_version', '1.1')}"
        line = f'{who} - "{request}" {status} {_phrase(status)} {ms:.1f} ms'
        for hidden in self._hidden:
            line = line.replace(hidden, HIDDEN)
        access_log.info(line)
