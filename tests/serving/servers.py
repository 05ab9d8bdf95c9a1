"""Helpers of the serve tests: a real ``cnnlab serve`` process on a free loopback port, and a stdlib HTTP
client to talk to it.

The server's output is read all along by a thread into ``Server.lines``: a server logging a line per
request would otherwise fill the pipe and block, and the tests read its access log.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 90  # importing torch and opening the model on a busy 2-core machine


def _die_with_parent() -> None:
    """The server gets SIGTERM if pytest dies, so no test leaves a server running (Linux)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Server:
    """A running ``cnnlab serve`` process: its URL, its output so far and, once stopped, its exit code."""

    process: subprocess.Popen
    url: str
    lines: list[str]
    reader: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = 10) -> str:
        """The first output line holding ``text``, once the server has written it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((line for line in list(self.lines) if text in line), None)
            if found is not None:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no line with {text!r} in the server's output:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30, wait: bool = True) -> tuple[int, str]:
        """Sends ``sig`` and waits for the exit: (exit code, its output). Without ``wait``, the process
        ends by itself (tearing down torch takes seconds on a busy machine; the tests need not wait)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        if not wait:
            return -1, ""
        return self.wait(timeout)

    def wait(self, timeout: float = 30) -> tuple[int, str]:
        """Waits for the exit a signal already sent asked for, sending none: a second SIGTERM that lands
        after the server restored the default handlers (while torch tears down) would kill it (-15)."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.reader is not None:
            self.reader.join(timeout=10)
        return self.process.returncode, self.output()


def start_server(
    target: Path, *options: str, env: dict[str, str] | None = None, entry: list[str] | None = None
) -> Server:
    """``cnnlab serve TARGET --port 0 OPTIONS``, once it prints its URL.

    Args:
        env: variables added to this process's environment (CNNLAB_API_KEY).
        entry: the command before ``serve`` instead of ``python -m cnnlab`` (a wrapper script).
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    command = entry or [sys.executable, "-m", "cnnlab"]
    process = subprocess.Popen(
        [*command, "serve", str(target), "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=_die_with_parent,
    )
    lines: list[str] = []
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r" on (https?://127\.0\.0\.1:\d+) ", line)
        if found:
            reader = threading.Thread(target=_read_all, args=(process, lines), daemon=True)
            reader.start()
            return Server(process, found.group(1), lines, reader)
    process.kill()
    raise AssertionError("the server did not start:\n" + "".join(lines) + process.stdout.read())


def _read_all(process: subprocess.Popen, lines: list[str]) -> None:
    lines.extend(process.stdout)


def multipart(files: list[tuple[str, bytes]], field: str = "image") -> tuple[bytes, str]:
    """(body, Content-Type) of a form with each file in ``field``."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def exchange(
    url: str,
    method: str = "GET",
    path: str = "/",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    connection: http.client.HTTPConnection | None = None,
    timeout: float = 30,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], Any]:
    """(status, headers with lower-case names, JSON body or text) of one request; reuses ``connection``
    when given; an https URL is checked against ``context``."""
    host = url.split("//")[1]
    if connection is not None:
        conn = connection
    elif url.startswith("https:"):
        conn = http.client.HTTPSConnection(host, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
    finally:
        if connection is None:
            conn.close()
    kind = response.getheader("content-type", "")
    return (
        response.status,
        {k.lower(): v for k, v in response.getheaders()},
        json.loads(data) if kind.startswith("application/json") else data.decode(),
    )


def request(
    url: str,
    method: str = "GET",
    path: str = "/",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    connection: http.client.HTTPConnection | None = None,
    timeout: float = 30,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Any]:
    """(status, JSON body or text) of one request; reuses ``connection`` when given."""
    status, _, body = exchange(url, method, path, body, headers, connection, timeout, context)
    return status, body


def post_images(
    url: str,
    files: list[tuple[str, bytes]],
    path: str = "/predict",
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    body, content_type = multipart(files)
    return request(url, "POST", path, body, {"Content-Type": content_type, **(headers or {})}, **kwargs)
