"""The lesson's exercise 3 as one call: the same model with and without augmentation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from cnnlab.config import AugmentConfig, RunConfig, resolve_augment
from cnnlab.errors import CnnlabError
from cnnlab.evaluation.run_evaluation import train_and_evaluate
from cnnlab.figures import plot_curves
from cnnlab.io import atomic_write_json, atomic_write_text
from cnnlab.training.distributed import in_processes
from cnnlab.training.history import load_history
from cnnlab.training.ranks import Ranks
from cnnlab.training.run_dir import default_name


@dataclass
class ExperimentResult:
    """Where the experiment wrote, and one row per arm."""

    folder: Path
    rows: list[dict[str, Any]]
    figure: Path


def _row(arm: str, history: pd.DataFrame, run_dir: Path, test: dict[str, Any]) -> dict[str, Any]:
    last = history.iloc[-1] if len(history) else pd.Series(dtype=float)
    train_acc, val_acc = last.get("train_acc"), last.get("val_acc")
    gap = train_acc - val_acc if pd.notna(train_acc) and pd.notna(val_acc) else None
    return {
        "arm": arm,
        "epochs": len(history),
        "train_acc": None if pd.isna(train_acc) else float(train_acc),
        "val_acc": None if pd.isna(val_acc) else float(val_acc),
        "test_acc": test["accuracy"],
        "train_val_gap": None if gap is None else float(gap),
        "run": str(run_dir),
    }


def _table(rows: list[dict[str, Any]]) -> str:
    def pct(value: Any) -> str:
        return "-" if value is None else f"{value:.2%}"

    lines = [
        "| augmentation | epochs | train acc | val acc | test acc | train-val gap | run |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gap = "-" if r["train_val_gap"] is None else f"{r['train_val_gap'] * 100:+.2f} pts"
        lines.append(
            f"| {r['arm']} | {r['epochs']} | {pct(r['train_acc'])} | {pct(r['val_acc'])} | "
            f"{pct(r['test_acc'])} | {gap} | {r['run']} |"
        )
    return "\n".join(lines) + "\n"


def augmentation_experiment(config: RunConfig, command: str) -> ExperimentResult:
    """Trains ``config`` twice, same seed and epochs: with no augmentation, and with
    ``config.augment`` (the lesson's preset when it has none), then compares the two.

    With several devices both runs happen in the same processes; rank 0 writes the comparison.
    """
    if config.augment.mixup or config.augment.cutmix:
        raise CnnlabError("mixup/cutmix change the targets; compare them with separate runs")
    return in_processes(config.train, _both_arms, config, command)


def _both_arms(ranks: Ranks, config: RunConfig, command: str) -> ExperimentResult:
    augment = config.augment if config.augment != AugmentConfig() else resolve_augment("lesson")
    name = config.name or f"{default_name(config)}-augmentation"
    folder = Path(config.runs_dir).expanduser() / name
    rows, histories = [], {}
    for arm, arm_augment in (("without", AugmentConfig()), ("with", augment)):
        arm_config = dataclasses.replace(config, augment=arm_augment, runs_dir=str(folder), name=arm)
        files, test = train_and_evaluate(arm_config, f"{command}  # arm: {arm} augmentation")
        histories[f"{arm} augmentation"] = history = ranks.from_zero(partial(load_history, files.metrics_csv))
        rows.append(_row(arm, history, files.root, test))

    def write() -> Path:
        figure = plot_curves(
            histories,
            folder / "augmentation_experiment.png",
            "With vs without augmentation (dashed: train, solid: validation)",
        )
        atomic_write_text(folder / "summary.md", _table(rows))
        atomic_write_json(
            folder / "experiment.json", {"command": command, "augment": dataclasses.asdict(augment), "rows": rows}
        )
        return figure

    return ExperimentResult(folder, rows, ranks.from_zero(write))
