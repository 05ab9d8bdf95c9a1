"""The lesson's exercise 3 as one call: the same model with and without augmentation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.ticker import MaxNLocator

from cnnlab.augment.options import AugmentConfig
from cnnlab.augment.presets import resolve_augment
from cnnlab.config import RunConfig
from cnnlab.evaluate.compare import load_history
from cnnlab.evaluate.figures import new_figure, save_figure
from cnnlab.evaluate.run import train_and_evaluate
from cnnlab.io import atomic_write_json, atomic_write_text
from cnnlab.train.run_dir import default_name

COLORS = {"without": "tab:red", "with": "tab:blue"}


@dataclass
class ExperimentResult:
    """Where the experiment wrote, and one row per arm."""

    folder: Path
    rows: list[dict[str, Any]]
    figure: Path


def _row(arm: str, run_dir: Path, test: dict[str, Any]) -> dict[str, Any]:
    history = load_history(run_dir)
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


def plot_arms(histories: dict[str, pd.DataFrame], out: Path) -> Path:
    """Accuracy and loss per epoch: train dashed, validation solid, one colour per arm."""
    fig = new_figure(11, 4.2)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("acc", "loss")):
        for arm, history in histories.items():
            for split, style in (("train", "--"), ("val", "-")):
                column = f"{split}_{metric}"
                if column in history:
                    ax.plot(history["epoch"] + 1, history[column], style, color=COLORS[arm],
                            label=f"{split} ({arm} augmentation)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if metric == "acc" else "loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, out, "With vs without augmentation (dashed: train, solid: validation)")


def _table(rows: list[dict[str, Any]]) -> str:
    def pct(value: Any) -> str:
        return "-" if value is None else f"{value:.2%}"

    lines = ["| augmentation | epochs | train acc | val acc | test acc | train-val gap | run |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        gap = "-" if r["train_val_gap"] is None else f"{r['train_val_gap'] * 100:+.2f} pts"
        lines.append(f"| {r['arm']} | {r['epochs']} | {pct(r['train_acc'])} | {pct(r['val_acc'])} | "
                     f"{pct(r['test_acc'])} | {gap} | {r['run']} |")
    return "\n".join(lines) + "\n"


def augmentation_experiment(config: RunConfig, command: str) -> ExperimentResult:
    """Trains ``config`` twice, same seed and epochs: with no augmentation, and with
    ``config.augment`` (the lesson's preset when it has none), then compares the two."""
    augment = config.augment if config.augment != AugmentConfig() else resolve_augment("lesson")
    name = config.name or f"{default_name(config)}-augmentation"
    folder = Path(config.runs_dir).expanduser() / name
    rows, histories = [], {}
    for arm, arm_augment in (("without", AugmentConfig()), ("with", augment)):
        arm_config = dataclasses.replace(config, augment=arm_augment, runs_dir=str(folder), name=arm)
        files, test = train_and_evaluate(arm_config, f"{command}  # arm: {arm} augmentation")
        rows.append(_row(arm, files.root, test))
        histories[arm] = load_history(files.root)
    figure = plot_arms(histories, folder / "augmentation_experiment.png")
    atomic_write_text(folder / "summary.md", _table(rows))
    atomic_write_json(folder / "experiment.json", {
        "command": command, "augment": dataclasses.asdict(augment), "rows": rows,
    })
    return ExperimentResult(folder, rows, figure)
