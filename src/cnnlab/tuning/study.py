"""``cnnlab tune``: an Optuna study over the options that matter, within one time budget.

Each trial is a normal run folder (``OUT/runs/trial-NNN``) trained by ``cnnlab train``'s own path
with a share of the budget (``--time-budget`` of the trial), reported epoch by epoch to Optuna's
pruner, and scored on the validation split; the test split is scored once, for the best trial.
The study lives in ``OUT/study.db`` (SQLite): Ctrl-C or kill -9 loses at most the trial that was
running, and the same command continues the same study with what is left of the budget.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.config import RunConfig, from_dict, to_dict
from cnnlab.errors import CnnlabError
from cnnlab.evaluation.evaluator import score_split
from cnnlab.evaluation.run_evaluation import evaluate_run
from cnnlab.io import atomic_write_text
from cnnlab.training.hooks import TrainingHooks
from cnnlab.training.run_dir import RunFiles, read_record, read_run_config, write_record
from cnnlab.training.run_fit import TrainingInterrupted, train_run
from cnnlab.training.start import start_run
from cnnlab.training.trainer import run_autocast
from cnnlab.tuning.outputs import TuneFiles, write_outputs
from cnnlab.tuning.space import base_params, config_for_file, search_space, trial_config
from cnnlab.tuning.trial_pruning import PruneOnValidation

log = logging.getLogger("cnnlab")

STUDY = "cnnlab-tune"
TRIAL_SHARE = 6  # a trial gets 1/6 of the whole budget by default: at least 6 trials, more when some are pruned
MIN_TRIAL_SECONDS = 5.0  # less than this left: no trial starts
HEARTBEAT = 5  # s between a running trial's signs of life in the study; a killed one is failed after GRACE
GRACE = 20


@dataclass
class TuneResult:
    """What a search found: the trials (one dict per row of trials.csv), the best, and the files."""

    files: TuneFiles
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    best_config: RunConfig | None
    test_accuracy: float | None
    seconds_used: float
    budget: float
    notes: list[str] = field(default_factory=list)


def _storage(files: TuneFiles) -> Any:
    """The SQLite study; a trial whose process died (kill -9) is failed once its heartbeat is older than
    GRACE, and tried again once with the same parameters."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 4.9-5: stable since 2.8 in fact
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            f"sqlite:///{files.study}",
            heartbeat_interval=HEARTBEAT,
            grace_period=GRACE,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            engine_kwargs={"connect_args": {"timeout": 30}},
        )


def _open_study(files: TuneFiles, base: RunConfig, seed: int) -> Any:
    """The study in ``files.study``: new, or the one a previous run of the same search left.

    Raises:
        CnnlabError: when that file holds a search of other data or another model.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    study = optuna.create_study(
        study_name=STUDY,
        storage=_storage(files),
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    saved = study.user_attrs.get("base")
    mine = to_dict(dataclasses.replace(base, name=None))
    if saved is None:
        study.set_user_attr("base", mine)
        params = base_params(base)
        if params is not None:  # trial 0: the run as the user asked for it, the yardstick of the search
            study.enqueue_trial(params, user_attrs={"baseline": True})
    elif to_dict(from_dict(saved)) != mine:  # through the schema: an option added since has its default
        raise CnnlabError(
            f"'{files.root}' holds a search with other options (data, model or the rest); give this "
            "search another --out, or repeat the first one's options to continue it"
        )
    return study


def _val_scores(result: Any) -> tuple[float, float]:
    """(accuracy, loss) of the kept weights on the validation split: what trials are compared on."""
    val = result.data.splits["val"]
    accumulator, _ = score_split(
        result.module.model, result.module.normalize, val, result.data.num_classes, run_autocast(result.config.train)
    )
    scores = accumulator.compute(result.data.class_names)
    return float(scores["accuracy"]), float(scores["loss"])


def _mark(files: RunFiles, status: str | None, note: str | None = None) -> None:
    """A trial's run.json gets its status (None: unchanged) and, as its only note, what the trial was."""
    record = read_record(files)
    record.status = status or record.status
    if note is not None:
        record.notes = [note]
    write_record(files, record)


@dataclass
class _Clock:
    """The search's wall clock: its deadline, and what a trial costs besides training (start, scoring, files)."""

    deadline: float
    overhead: float = 2.0  # s; the last trial's (the first one's includes decoding the data, once)

    def left(self) -> float:
        return self.deadline - time.monotonic() - self.overhead


def _objective(
    base: RunConfig, files: TuneFiles, trial_budget: float, clock: _Clock, command: str
) -> Callable[[Any], float]:
    import optuna

    space = search_space(base)

    def objective(trial: Any) -> float:
        began = time.monotonic()
        params = {
            p.name: p.suggest(trial)
            for p in space
            if not (p.name == "augment_strength" and trial.params.get("augment") == "none")
        }
        budget = max(1.0, min(trial_budget, clock.left()))
        config = trial_config(base, params, f"trial-{trial.number:03d}", str(files.runs), budget)
        print(
            f"\n=== trial {trial.number}: {', '.join(f'{k} {_short(v)}' for k, v in params.items())}; "
            f"{budget:.0f} s of training ({max(0.0, clock.deadline - began):.0f} s of the search left)",
            flush=True,
        )
        ctx = start_run(config, f"{command}  # trial {trial.number}")
        trial.set_user_attr("run", str(ctx.files.root))
        pruning = PruneOnValidation(trial)
        ctx.hooks = TrainingHooks(callbacks=[pruning])

        def spent() -> None:  # what the trial cost besides training: the next trials keep it free
            trained = sum(float(s.seconds or 0) for s in ctx.record.stages)
            clock.overhead = max(1.0, time.monotonic() - began - trained)

        try:
            result = train_run(ctx)
        except optuna.TrialPruned:
            _mark(ctx.files, "pruned", f"tune trial {trial.number}: pruned")
            spent()
            raise
        accuracy, loss = _val_scores(result)
        trial.set_user_attr("val_loss", loss)
        trial.set_user_attr("epochs", sum(int(s.epochs or 0) for s in result.record.stages))
        pruned = pruning.pruned_at is not None  # stopped in its last stage: the run is whole, the trial pruned
        _mark(
            ctx.files,
            "pruned" if pruned else None,
            f"tune trial {trial.number}: "
            + (
                "pruned"
                if pruned
                else f"validation accuracy {accuracy:.4f}; the test split is scored only for the best trial"
            ),
        )
        spent()
        if pruned:
            raise optuna.TrialPruned(f"pruned at step {pruning.pruned_at}")
        return accuracy

    return objective


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _seconds_used(study: Any) -> float:
    return float(study.user_attrs.get("seconds_used", 0.0))


def tune(
    base: RunConfig,
    out: str | Path,
    time_budget: float,
    trial_budget: float | None = None,
    trials: int | None = None,
    command: str = "cnnlab tune",
) -> TuneResult:
    """Searches ``base``'s options within ``time_budget`` seconds (all sessions of the study together).

    Raises:
        CnnlabError: bad options or data (as ``cnnlab train`` says), or ``out`` holding another search.
        TrainingInterrupted: Ctrl-C, after the outputs of the finished trials are written.
    """
    if time_budget <= 0:
        raise CnnlabError(f"--time-budget must be greater than 0 seconds, got {time_budget:g}")
    if trial_budget is not None and trial_budget <= 0:
        raise CnnlabError(f"--trial-budget must be greater than 0 seconds, got {trial_budget:g}")
    # Trials get their own budgets; the search's rate is searched, so 'auto' starts trial 0 at the default.
    lr = 1e-3 if base.train.lr == "auto" else base.train.lr
    base = dataclasses.replace(base, train=dataclasses.replace(base.train, lr=lr, time_budget=None))
    files = TuneFiles(Path(out).expanduser())
    files.root.mkdir(parents=True, exist_ok=True)
    study = _open_study(files, base, base.train.seed)
    used_before = _seconds_used(study)
    share = trial_budget or time_budget / TRIAL_SHARE
    started = time.monotonic()
    session = _Session(files, base, used_before, started, _Clock(started + time_budget - used_before))
    notes = []
    if used_before:
        notes.append(
            f"continued the study in {files.study.name}: {len(study.trials)} trials and {used_before:.0f} s from before"
        )
        print(notes[-1], flush=True)
    stop = None
    if session.clock.left() >= _shortest_trial(share):
        stop = _run_trials(study, session, share, trials, command)
    else:
        notes.append(f"the time budget ({time_budget:g} s) was used up before: no new trial")
    if stop is not None:  # the outputs as they stand; the best is scored when the search ends
        write_outputs(files, study, base)
        raise TrainingInterrupted(None, RunFiles(files.root), "every finished trial is in the study") from None
    return _finish(files, study, base, time_budget, notes)


@dataclass
class _Session:
    """This session of a study: its files, trial 0's options, the time spent before it, its start and clock."""

    files: TuneFiles
    base: RunConfig
    used_before: float
    started: float
    clock: _Clock

    def record_time(self, study: Any) -> None:
        """The seconds every session spent so far, in the study (the budget is for all sessions together)."""
        study.set_user_attr("seconds_used", self.used_before + time.monotonic() - self.started)


def _shortest_trial(share: float) -> float:
    """Less time than this is too short a trial to say anything."""
    return max(MIN_TRIAL_SECONDS, 0.25 * share)


def _run_trials(
    study: Any, session: _Session, share: float, trials: int | None, command: str
) -> TrainingInterrupted | KeyboardInterrupt | None:
    """Runs trials until the budget or the trial count is spent; the Ctrl-C that stopped them, if one did."""

    def keep_time(study: Any, _trial: Any) -> None:  # after each trial: the budget spent, the files current
        session.record_time(study)
        write_outputs(session.files, study, session.base)
        if session.clock.left() < _shortest_trial(share):
            study.stop()

    stop = None
    try:
        study.optimize(
            _objective(session.base, session.files, share, session.clock, command),
            n_trials=trials,
            callbacks=[keep_time],
            catch=(CnnlabError,),
            gc_after_trial=True,
        )
    except (TrainingInterrupted, KeyboardInterrupt) as interrupted:
        stop = interrupted
    session.record_time(study)
    return stop


def _finish(files: TuneFiles, study: Any, base: RunConfig, budget: float, notes: list[str]) -> TuneResult:
    """Outputs, and the best trial's test score (once: a rerun finds it scored)."""
    import optuna

    rows = write_outputs(files, study, base)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return TuneResult(
            files,
            rows,
            None,
            None,
            None,
            _seconds_used(study),
            budget,
            [*notes, "no trial finished: give a larger --time-budget or --trial-budget"],
        )
    best = max(complete, key=lambda t: (t.value, -t.user_attrs.get("val_loss", 0.0)))
    run = RunFiles(Path(best.user_attrs["run"]))
    config = read_run_config(run)
    atomic_write_text(files.best_yaml, _best_yaml(config, best))
    tested = study.user_attrs.get("tested") or {}
    if tested.get("trial") != best.number:
        _, metrics = evaluate_run(run.root)
        _mark(run, "completed")
        tested = {"trial": best.number, "accuracy": float(metrics["accuracy"])}
        study.set_user_attr("tested", tested)
    best_row = next(r for r in rows if r["trial"] == best.number)
    return TuneResult(files, rows, best_row, config, tested["accuracy"], _seconds_used(study), budget, notes)


def _best_yaml(config: RunConfig, trial: Any) -> str:
    import yaml

    head = (
        f"# cnnlab tune: the best trial ({trial.number}), validation accuracy {trial.value:.4f}; "
        "train with: cnnlab train DATA --config THIS_FILE\n"
    )
    return head + yaml.safe_dump(config_for_file(config), sort_keys=False)
