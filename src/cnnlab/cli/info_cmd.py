"""``cnnlab info``: versions, devices and threads, for bug reports and sanity checks."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import platform
from typing import Any

PACKAGES = (
    "cnnlab",
    "torch",
    "torchvision",
    "timm",
    "lightning",
    "torchmetrics",
    "numpy",
    "pillow",
    "scikit-learn",
    "matplotlib",
    "onnx",
    "onnxruntime",
)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("info", help="versions, devices (CPU/CUDA/MPS) and threads")
    p.set_defaults(func=run)


def collect() -> dict[str, Any]:
    """The facts ``cnnlab info`` prints, as a dict."""
    import torch

    from cnnlab.machine import cpu_name

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    devices = [f"cpu: {cpu_name()} ({os.cpu_count()} logical cores)"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}: {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    else:
        devices.append("cuda: not available")
    mps = getattr(torch.backends, "mps", None)
    devices.append(f"mps: {'available' if mps is not None and mps.is_available() else 'not available'}")
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "devices": devices,
        "threads": {"intra-op": torch.get_num_threads(), "inter-op": torch.get_num_interop_threads()},
    }


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from cnnlab.cli.output import stdout_console

    facts = collect()
    table = Table("what", "value", title="cnnlab info", show_header=False)
    table.add_row("python", f"{facts['python']} on {facts['platform']}")
    for name, version in facts["versions"].items():
        table.add_row(name, version)
    for device in facts["devices"]:
        table.add_row("device", device)
    threads = facts["threads"]
    table.add_row("torch threads", f"{threads['intra-op']} intra-op, {threads['inter-op']} inter-op")
    stdout_console().print(table)
    return 0
