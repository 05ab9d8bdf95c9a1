"""Helpers of the serve tests: a real ``cnnlab serve`` process on a free loopback port, and a stdlib
HTTP client to talk to it."""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import re
import signal
import subprocess
import sys
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
    """A running ``cnnlab serve`` process: its URL and, once stopped, its exit code and output."""

    process: subprocess.Popen
    url: str
    lines: list[str]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30, wait: bool = True) -> tuple[int, str]:
        """Sends ``sig`` and waits for the exit: (exit code, its output). Without ``wait``, the process
        ends by itself (tearing down torch takes seconds on a busy machine; the tests need not wait)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        if not wait:
            return -1, ""
        try:
            rest, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            rest, _ = self.process.communicate()
        return self.process.returncode, "".join(self.lines) + (rest or "")


def start_server(target: Path, *options: str) -> Server:
    """``cnnlab serve TARGET --port 0 OPTIONS``, once it prints its URL."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", str(target), "--port", "0", *options],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               preexec_fn=_die_with_parent)
    lines: list[str] = []
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r" on (http://127\.0\.0\.1:\d+) ", line)
        if found:
            return Server(process, found.group(1), lines)
    process.kill()
    raise AssertionError("the server did not start:\n" + "".join(lines) + process.stdout.read())


def multipart(files: list[tuple[str, bytes]], field: str = "image") -> tuple[bytes, str]:
    """(body, Content-Type) of a form with each file in ``field``."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def request(url: str, method: str = "GET", path: str = "/", body: bytes | None = None,
            headers: dict[str, str] | None = None, connection: http.client.HTTPConnection | None = None,
            timeout: float = 30) -> tuple[int, Any]:
    """(status, JSON body or text) of one request; reuses ``connection`` when given."""
    conn = connection or http.client.HTTPConnection(url.split("//")[1], timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
    finally:
        if connection is None:
            conn.close()
    kind = response.getheader("content-type", "")
    return response.status, json.loads(data) if kind.startswith("application/json") else data.decode()


def post_images(url: str, files: list[tuple[str, bytes]], path: str = "/predict", **kwargs: Any) -> tuple[int, Any]:
    body, content_type = multipart(files)
    return request(url, "POST", path, body, {"Content-Type": content_type}, **kwargs)
