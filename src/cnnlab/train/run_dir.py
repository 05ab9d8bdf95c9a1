"""The run folder: everything a later command needs, in files with fixed names."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.config import RunConfig, from_dict, load_yaml
from cnnlab.data.types import SkippedFile
from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write_json, atomic_write_text, read_json


@dataclass(frozen=True)
class RunFiles:
    """Names of the files in ``runs/<name>/``."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def meta(self) -> Path:
        return self.root / "run.json"

    @property
    def metrics_csv(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def metrics_json(self) -> Path:
        return self.root / "metrics.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def skipped(self) -> Path:
        return self.root / "skipped_files.csv"

    @property
    def summary(self) -> Path:
        return self.root / "model_summary.txt"

    @property
    def report(self) -> Path:
        return self.root / "report.html"


def default_name(config: RunConfig) -> str:
    """``<model>-<data>``, e.g. ``simple_cnn-mnist-sample``."""
    data = Path(config.data.source.rstrip("/\\")).stem or "data"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{config.model.name}-{data}").strip("-")


def new_run_dir(config: RunConfig) -> RunFiles:
    """Creates ``runs/<name>``, or ``<name>-2``, ``-3``... when taken (never overwrites a run)."""
    base = Path(config.runs_dir).expanduser()
    name = config.name or default_name(config)
    for number in range(1, 10_000):
        candidate = base / (name if number == 1 else f"{name}-{number}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)  # atomic claim, safe with parallel runs
        except FileExistsError:
            continue
        except OSError as exc:
            raise CnnlabError(f"cannot create run folder '{candidate}': {exc.strerror}; check --runs-dir") from None
        return RunFiles(candidate)
    raise CnnlabError(f"too many runs named '{name}' in {base}; pick another --name")


def open_run(path: str | Path) -> RunFiles:
    """An existing run folder, checked to be one.

    Raises:
        CnnlabError: when the folder is missing or is not a cnnlab run.
    """
    files = RunFiles(Path(path).expanduser())
    if not files.root.is_dir():
        raise CnnlabError(f"run folder '{files.root}' not found; runs are in runs/<name>")
    if not files.meta.is_file() or not files.config.is_file():
        raise CnnlabError(f"'{files.root}' is not a cnnlab run folder (no run.json/config.yaml)")
    return files


def read_meta(files: RunFiles) -> dict[str, Any]:
    return read_json(files.meta)


def write_meta(files: RunFiles, meta: dict[str, Any]) -> None:
    atomic_write_json(files.meta, meta)


def update_meta(files: RunFiles, **changes: Any) -> dict[str, Any]:
    """Reads run.json, applies ``changes``, writes it back atomically."""
    meta = read_meta(files)
    meta.update(changes)
    write_meta(files, meta)
    return meta


def read_run_config(files: RunFiles) -> RunConfig:
    return from_dict(load_yaml(files.config))


def write_skipped(files: RunFiles, skipped: list[SkippedFile]) -> None:
    """``skipped_files.csv``: every input file that was not used, with the reason."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "reason"])
    writer.writerows([item.path, item.reason] for item in skipped)
    atomic_write_text(files.skipped, buffer.getvalue())
