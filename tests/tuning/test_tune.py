"""``cnnlab tune``: several trials within the budget, pruning, kill -9 and continue, a best config that trains."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from conftest import read_json

BUDGET = 24  # s for the whole search: the lesson's CNN on 8x8 digits trains an epoch in ~0.2 s
ARGS = ("tune", "digits", "--time-budget", str(BUDGET), "--epochs", "4", "--trial-budget", "3")


def _study(out: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name="cnnlab-tune", storage=f"sqlite:///{out / 'study.db'}")


def _finished(out: Path) -> int:
    """Trials ended so far, read without Optuna: its storage creates the schema when it finds none, which
    raced the search creating it (the search then failed at start, now and then, on a busy machine)."""
    import sqlite3

    if not (out / "study.db").is_file():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True, timeout=5)) as db:
            return int(db.execute("SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')").fetchone()[0])
    except sqlite3.OperationalError:  # being created, or locked for a moment
        return 0


def test_tune_survives_kill_9_continues_the_study_and_its_best_config_trains(cli, tmp_path):
    out = tmp_path / "search"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    began = time.monotonic()
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "cnnlab", *ARGS, "--out", str(out)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        while _finished(out) < 3 and child.poll() is None and time.monotonic() - began < 120:
            time.sleep(0.3)
        assert child.poll() is None, f"the search ended before it could be killed: {errors.read_text()[-2000:]}"
        os.kill(child.pid, signal.SIGKILL)  # mid-search: no cleanup of any kind
    finally:
        child.wait(timeout=30)
    before = {t.number for t in _study(out).trials}
    used_before = _study(out).user_attrs["seconds_used"]
    assert len(before) >= 3
    # A rate far too low to learn in 4 epochs, first in line when the search goes on: the pruner must stop it.
    _study(out).enqueue_trial(
        {"lr": 1e-4, "weight_decay": 1e-6, "augment": "none", "label_smoothing": 0.0, "batch_size": 128, "epochs": 4}
    )

    code, printed, err = cli(*ARGS, "--out", out)
    assert code == 0, err
    assert "continued the study" in printed
    study = _study(out)
    states = [t.state.name for t in study.trials]
    assert max(t.number for t in study.trials) > max(before)  # the same study, numbering on
    assert states.count("COMPLETE") + states.count("PRUNED") >= 5
    slow = next(t for t in study.trials if t.params.get("lr") == 1e-4)
    assert slow.state.name == "PRUNED" and len(slow.intermediate_values) < 4, slow.intermediate_values
    assert study.trials[0].user_attrs.get("baseline")  # trial 0 is the options as given
    assert used_before <= study.user_attrs["seconds_used"] <= BUDGET + 4  # the whole search, both sessions
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == len(study.trials) + 1
    assert (out / "history.png").is_file() and (out / "importance.png").is_file()

    best = study.user_attrs["tested"]["trial"]
    tested = [p for p in (out / "runs").iterdir() if (p / "metrics.json").is_file()]
    assert [p.name for p in tested] == [f"trial-{best:03d}"]  # the test split scored once, for the best
    assert read_json(tested[0] / "run.json")["status"] == "completed"
    assert f"best: trial {best}" in printed and "--config" in printed

    settings = yaml.safe_load((out / "best.yaml").read_text())
    assert "source" not in settings["data"] and "name" not in settings
    code, _, err = cli(
        "train",
        "digits",
        "--config",
        out / "best.yaml",
        "--epochs",
        "1",
        "--runs-dir",
        tmp_path / "runs",
        "--name",
        "best",
    )
    assert code == 0, err
    assert read_json(tmp_path / "runs" / "best" / "run.json")["status"] == "completed"


def test_tune_needs_a_budget_and_refuses_another_search_folder(cli, tmp_path):
    code, _, err = cli("tune", "digits", "--out", tmp_path / "a")
    assert code == 2 and "--time-budget" in err and len(err.strip().splitlines()) == 1
    from cnnlab.config import build_config
    from cnnlab.errors import CnnlabError
    from cnnlab.tuning.outputs import TuneFiles
    from cnnlab.tuning.study import _open_study

    files = TuneFiles(tmp_path / "b")
    files.root.mkdir()
    _open_study(files, build_config(data="digits"), 0)
    with pytest.raises(CnnlabError, match="another --out"):
        _open_study(files, build_config(data="digits", model="fast_cnn"), 0)


def test_a_search_saved_before_an_option_existed_continues(tmp_path):
    """An upgrade that adds an option (with its default) must not orphan a study saved by the older version."""
    from cnnlab.config import build_config, to_dict
    from cnnlab.tuning.outputs import TuneFiles
    from cnnlab.tuning.study import _open_study

    files = TuneFiles(tmp_path / "old")
    files.root.mkdir()
    base = build_config(data="digits")
    study = _open_study(files, base, 0)
    older = to_dict(base)
    older.pop("tracking")  # the section a later version added
    older.pop("name")
    study.set_user_attr("base", older)
    assert _open_study(files, base, 0).study_name == study.study_name


def test_a_stage_on_cached_features_reports_once_its_best_and_a_pruned_trial_skips_the_next_stage():
    import optuna
    import torch

    from cnnlab.training.feature_cache import FeatureHeadModule
    from cnnlab.tuning.trial_pruning import STAGE_STEPS, PruneOnValidation

    class Trial:
        def __init__(self) -> None:
            self.reports: list[tuple[float, int]] = []

        def report(self, value: float, step: int) -> None:
            self.reports.append((round(value, 3), step))

        def should_prune(self) -> bool:
            return self.reports[-1][0] < 0.5

    class Trainer:
        sanity_checking, should_stop, current_epoch = False, False, 0
        callback_metrics: ClassVar[dict] = {}

    trial, trainer, pruning = Trial(), Trainer(), PruneOnValidation(Trial())
    pruning.trial = trial
    head = object.__new__(FeatureHeadModule)  # only its type matters here
    pruning.on_fit_start(trainer, head)
    for epoch, accuracy in enumerate([0.2, 0.45, 0.4]):  # a slow start: no report, no pruning yet
        trainer.current_epoch, trainer.callback_metrics = epoch, {"val_acc": torch.tensor(accuracy)}
        pruning.on_validation_end(trainer, head)
    assert trial.reports == [] and not trainer.should_stop
    pruning.on_fit_end(trainer, head)
    assert trial.reports == [(0.45, 0)] and pruning.pruned_at == 0  # the stage's best, at its end
    pruning.on_fit_start(trainer, object())
    with pytest.raises(optuna.TrialPruned):
        pruning.on_train_start(trainer, object())  # fine-tuning never starts
    trial.reports.clear()
    other = PruneOnValidation(trial)
    other.stage = 0
    trainer.current_epoch, trainer.callback_metrics = 2, {"val_acc": torch.tensor(0.9)}
    other.on_validation_end(trainer, object())  # a stage on images reports every epoch
    assert trial.reports == [(0.9, 2)] and STAGE_STEPS == 1000
