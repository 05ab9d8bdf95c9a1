"""What a search leaves in its folder besides the runs: the trials table, Optuna's plots, the best config."""

from __future__ import annotations

import csv
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.config import RunConfig
from cnnlab.figures import png_bytes
from cnnlab.io import atomic_write_bytes, atomic_write_text

log = logging.getLogger("cnnlab")


@dataclass(frozen=True)
class TuneFiles:
    """The files of ``cnnlab tune``'s folder (``--out``)."""

    root: Path

    @property
    def study(self) -> Path:
        """The Optuna study (SQLite): every trial's parameters, reports and result; a rerun continues it."""
        return self.root / "study.db"

    @property
    def runs(self) -> Path:
        """One run folder per trial: ``runs/trial-NNN``."""
        return self.root / "runs"

    @property
    def trials_csv(self) -> Path:
        return self.root / "trials.csv"

    @property
    def history(self) -> Path:
        return self.root / "history.png"

    @property
    def importance(self) -> Path:
        return self.root / "importance.png"

    @property
    def best_yaml(self) -> Path:
        """The best trial's options, for ``cnnlab train DATA --config best.yaml``."""
        return self.root / "best.yaml"


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial: number, state, validation accuracy and loss, epochs, seconds, parameters, run."""
    rows = []
    for trial in study.trials:
        seconds = (
            (trial.datetime_complete - trial.datetime_start).total_seconds()
            if trial.datetime_complete and trial.datetime_start
            else None
        )
        value = trial.value
        if value is None and trial.intermediate_values:  # a pruned trial: its last report
            value = trial.intermediate_values[max(trial.intermediate_values)]
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name.lower(),
                "val_acc": value,
                "val_loss": trial.user_attrs.get("val_loss"),
                "epochs": trial.user_attrs.get("epochs"),
                "seconds": None if seconds is None else round(seconds, 1),
                "baseline": bool(trial.user_attrs.get("baseline")),
                **{f"param_{k}": v for k, v in trial.params.items()},
                "run": trial.user_attrs.get("run", ""),
            }
        )
    return rows


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _plot(draw: Any, study: Any, out: Path) -> None:
    """One of Optuna's matplotlib plots as a PNG (they draw with pyplot: the figure is closed after)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # "few trials for this parameter": the plot says as much
        try:
            axes = draw(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # too few finished trials for it
            log.debug("no %s yet: %s", out.name, exc)
            return
    figure = (axes[0] if hasattr(axes, "__len__") else axes).figure
    figure.set_size_inches(8, 4.5)
    figure.tight_layout()
    atomic_write_bytes(out, png_bytes(figure))
    plt.close(figure)


def write_outputs(files: TuneFiles, study: Any, base: RunConfig) -> list[dict[str, Any]]:
    """trials.csv and the history and importance plots, as the study stands now."""
    from optuna.visualization import matplotlib as optuna_plots

    rows = trial_rows(study)
    if rows:
        _write_csv(rows, files.trials_csv)
    complete = [r for r in rows if r["state"] == "complete"]
    if complete:
        _plot(optuna_plots.plot_optimization_history, study, files.history)
    if len(complete) >= 2:
        _plot(optuna_plots.plot_param_importances, study, files.importance)
    return rows
