"""Test helpers for runs of several processes: a free port, and a record of every file write a
process makes under a folder, with the process's rank.

Python's audit hooks see each ``open`` for writing, rename, mkdir, remove and SQLite connection
before it happens, whoever makes it (cnnlab, Lightning, matplotlib...). Each one under the watched
folder becomes a line "rank<TAB>event<TAB>path" in a log file. ``install`` puts the hook into this
process; ``sitecustomize_source`` is the same as a ``sitecustomize.py`` for processes started by
others (torchrun), reading the log and folder from CNNLAB_TEST_WRITES_LOG and CNNLAB_TEST_WATCHED.
"""

from __future__ import annotations

import contextlib
import inspect
import multiprocessing.process
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    """A TCP port free on the loopback interface now (for MASTER_PORT)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def install(log: str, root: str) -> None:
    """Appends to ``log`` each write this process makes under ``root`` (the log must be outside it)."""
    import urllib.parse

    root = os.path.realpath(root)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    # audit event -> the positions of its path arguments (os.replace raises os.rename)
    paths_of = {
        "os.rename": (0, 1),
        "os.mkdir": (0,),
        "os.remove": (0,),
        "os.rmdir": (0,),
        "os.truncate": (0,),
        "os.symlink": (1,),
        "os.link": (1,),
        "shutil.copyfile": (1,),
        "shutil.rmtree": (0,),
        "os.chmod": (0,),
        "os.utime": (0,),
    }
    busy: list[bool] = []

    def record(event: str, path: object) -> None:
        if not isinstance(path, (str, bytes, os.PathLike)):
            return  # a file descriptor
        full = os.path.realpath(os.fsdecode(path))
        if not (full == root or full.startswith(root + os.sep)):
            return
        rank = os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or "-"
        busy.append(True)
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(fd, f"{rank}\t{event}\t{full}\n".encode())
            os.close(fd)
        finally:
            busy.pop()

    def hook(event: str, args: tuple) -> None:
        if busy:
            return
        if event == "open" and len(args) == 3:
            path, mode, flags = args
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & write_flags)
            if writes:
                record(event, path)
        elif event == "sqlite3.connect" and args:
            database = str(args[0])
            if database.startswith("file:"):  # a URI: read-only when it says mode=ro
                parsed = urllib.parse.urlparse(database)
                event += " (read-only)" if "mode=ro" in parsed.query else ""
                database = urllib.parse.unquote(parsed.path)
            record(event, database)
        elif event in paths_of:
            for position in paths_of[event]:
                if position < len(args):
                    record(event, args[position])

    sys.addaudithook(hook)


def sitecustomize_source() -> str:
    """A sitecustomize.py that installs the hook when CNNLAB_TEST_WRITES_LOG is set."""
    return (
        inspect.getsource(install) + "\n\nimport os, sys\n"
        "if os.environ.get('CNNLAB_TEST_WRITES_LOG'):\n"
        "    install(os.environ['CNNLAB_TEST_WRITES_LOG'], os.environ['CNNLAB_TEST_WATCHED'])\n"
    )


def writes_by_rank(log: str) -> dict[str, list[str]]:
    """The recorded writes, "event path" per rank."""
    found: dict[str, list[str]] = {}
    if os.path.exists(log):
        for line in Path(log).read_text(encoding="utf-8").splitlines():
            rank, event, path = line.split("\t")
            found.setdefault(rank, []).append(f"{event} {path}")
    return found


@contextlib.contextmanager
def as_rank_0(env: dict[str, str], child: multiprocessing.process.BaseProcess) -> Iterator[None]:
    """This test process as rank 0 (``env`` added to its environment) beside the forked ``child``;
    afterwards a single process again: the child killed if still alive, the process group gone,
    environment and torch threads as before."""
    import torch

    from cnnlab.training import distributed

    saved_env, saved_threads = dict(os.environ), torch.get_num_threads()
    try:
        os.environ.update(env)
        yield
    finally:
        if child.is_alive():
            child.kill()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        distributed._current = None  # this test process is a single process again
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(saved_threads)
