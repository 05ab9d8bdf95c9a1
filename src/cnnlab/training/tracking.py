"""Experiment tracking in MLflow (``--tracking mlflow``): a run, also in the tracker a team shares.

The run folder stays the record every cnnlab command reads; MLflow gets a copy to browse and
compare: the resolved options as parameters when the run starts, each epoch's metrics while it
trains (Lightning's ``MLFlowLogger``, steps counted through all stages), and when it ends the test
metrics, the stage records, and the report, figures and config as artifacts. ``cnnlab export`` and
``quantize`` add the model files they write later.

Which MLflow run belongs to a cnnlab run is in run.json (``tracking``: store, experiment, run id),
so ``--resume``, export and quantize go on in the same MLflow run. Only rank 0 talks to MLflow.
mlflow is imported only when a run is tracked: importing it costs 1.2-1.9 s of start-up here.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger

from cnnlab.config import RunConfig, to_dict
from cnnlab.errors import CnnlabError
from cnnlab.training.record import RunRecord
from cnnlab.version import __version__

log = logging.getLogger("cnnlab")

DB_NAME = "mlflow.db"  # the default store, beside the run folders
# What a finished run sends as artifacts, besides its figures (a checkpoint is left out: it is large,
# and export's model files are the ones to deploy).
RUN_FILES = ("report", "config", "meta", "metrics_csv", "metrics_json", "classification_report", "summary", "skipped")


def store_uri(config: RunConfig) -> str:
    """``--tracking-uri``, else the SQLite store beside the run folders (absolute, so a resume from
    another folder finds it): ``sqlite:////abs/runs/mlflow.db``."""
    if config.tracking_uri:
        return config.tracking_uri
    return "sqlite:///" + (Path(config.runs_dir).expanduser().resolve() / DB_NAME).as_posix()


def ui_command(uri: str) -> str:
    """How to open the tracker: the MLflow UI on a local store, the server's own address otherwise."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri}"


def experiment_name(config: RunConfig) -> str:
    """One MLflow experiment per data set, so its runs are compared side by side: ``cnnlab/<data>``."""
    return "cnnlab/" + (Path(config.data.source.rstrip("/\\")).name or config.data.source)


def flat_params(config: RunConfig) -> dict[str, str]:
    """The resolved options as MLflow parameters: ``train.epochs`` -> ``"15"`` (YAML keys, flattened)."""
    params: dict[str, str] = {}

    def walk(prefix: str, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            if isinstance(value, Mapping):
                walk(f"{prefix}{key}.", value)
            else:
                params[prefix + key] = str(value)

    walk("", to_dict(config))
    return params


def artifact_location(uri: str) -> str | None:
    """Where a new experiment's files go: beside a SQLite store (MLflow's own default is ``./mlruns``
    in whichever folder the command ran in); a server decides for itself (None)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///") :]).expanduser().resolve().parent / "mlartifacts").as_uri()


def _client(uri: str) -> Any:
    """An MlflowClient on ``uri``, or a one-line error saying how to get MLflow."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise CnnlabError("--tracking mlflow needs MLflow: pip install 'cnnlab[track]'") from None
    return MlflowClient(tracking_uri=uri)


def _unreachable(uri: str, exc: Exception) -> CnnlabError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return CnnlabError(f"cannot use the MLflow store {uri}: {first}; check --tracking-uri (or --tracking off)")


def _check_reachable(uri: str, seconds: float = 10) -> None:
    """A tracking server that does not answer is said at once: MLflow's own client retries with
    back-off for minutes before it gives up. Any HTTP answer (even 401) means it is there."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=seconds).close()
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as exc:
        raise _unreachable(uri, exc) from None


def start_tracking(config: RunConfig, run_name: str, command: str) -> dict[str, Any] | None:
    """Creates the MLflow run of a new cnnlab run and logs its options; run.json's ``tracking`` record.

    Raises:
        CnnlabError: when MLflow is missing or the store cannot be used (before any training).
    """
    if config.tracking == "off":
        return None
    uri = store_uri(config)
    name = experiment_name(config)
    _check_reachable(uri)
    try:
        client = _client(uri)
        from mlflow.entities import Param

        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            experiment_id = client.create_experiment(name, artifact_location=artifact_location(uri))
        else:
            experiment_id = experiment.experiment_id
            if experiment.lifecycle_stage == "deleted":  # its name stays taken: bring it back
                client.restore_experiment(experiment_id)
        run = client.create_run(
            experiment_id, run_name=run_name, tags={"cnnlab.version": __version__, "cnnlab.command": command[:5000]}
        )
        params = [Param(key, value[:6000]) for key, value in flat_params(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per call
            client.log_batch(run.info.run_id, params=params[start : start + 100])
    except CnnlabError:
        raise
    except Exception as exc:  # noqa: BLE001  MLflow raises many kinds (REST, SQLAlchemy, OS): any is "cannot use"
        raise _unreachable(uri, exc) from None
    return {
        "tracker": "mlflow",
        "uri": uri,
        "experiment": name,
        "experiment_id": experiment_id,
        "run_id": run.info.run_id,
    }


def _record(run: RunRecord) -> dict[str, Any] | None:
    record = run.tracking
    return record if isinstance(record, dict) and record.get("run_id") else None


def resume_tracking(run: RunRecord) -> None:
    """A resumed run's MLflow run is running again (rank 0); a tracker that is gone is a warning."""
    record = _record(run)
    if record is None:
        return
    try:
        _client(record["uri"]).update_run(record["run_id"], status="RUNNING")
    except CnnlabError:
        raise
    except Exception as exc:  # noqa: BLE001  the tracker is a copy: its failure must not stop the run
        log.warning("MLflow run %s not updated: %s", record["run_id"], str(exc).splitlines()[0][:160])


class EpochLogger(MLFlowLogger):
    """Lightning's MLflow logger on the run's own MLflow run.

    Each stage is a ``fit`` of its own whose epochs Lightning counts from 0: the step logged is the
    epoch counted through all stages (the report's x axis), so stage 2's curve follows stage 1's.
    The options were logged once at the start, and the run's end is :func:`finish_tracking`'s to
    record. A tracker that fails while training costs a warning, never the run.
    """

    def __init__(self, record: Mapping[str, Any], stage: str, epochs_before: int) -> None:
        super().__init__(tracking_uri=record["uri"], run_id=record["run_id"])
        self.stage, self.epochs_before, self.failed = stage, epochs_before, False

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """The resolved config went in when the run started (MLflow parameters cannot change)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        epoch = metrics.get("epoch")
        values = {key: value for key, value in metrics.items() if key != "epoch"}
        if epoch is not None:
            step = self.epochs_before + int(epoch)
        if not values or self.failed:
            return
        try:
            super().log_metrics(values, step)
        except Exception as exc:  # noqa: BLE001  the tracker is a copy: its failure must not stop the run
            self.failed = True
            log.warning(
                "MLflow stopped taking metrics (%s); the run goes on, its folder keeps everything",
                str(exc).splitlines()[0][:160],
            )

    def finalize(self, status: str = "success") -> None:
        """A stage's end is not the run's."""


def stage_logger(run: RunRecord, stage: str) -> EpochLogger | None:
    """The MLflow logger of a stage's Trainer (rank 0 of a tracked run), else None."""
    record = _record(run)
    if record is None:
        return None
    done = [r for r in run.done_stages() if r.name != stage]
    return EpochLogger(record, stage, sum(int(r.epochs or 0) for r in done))


def _log_files(client: Any, run_id: str, root: Path, paths: list[Path]) -> None:
    for path in paths:
        if path.is_file():
            folder = path.parent.relative_to(root).as_posix()
            client.log_artifact(run_id, str(path), None if folder == "." else folder)


def finish_tracking(
    files: Any,
    run: RunRecord,
    metrics: Mapping[str, Any] | None,
    status: str = "FINISHED",
    figures: list[Path] | None = None,
) -> None:
    """Sends a run's end to MLflow (rank 0): test metrics, stage records, report, figures, status.

    Args:
        files: the run's ``RunFiles``.
        metrics: the test split's metrics (None: the run was not scored).
        status: MLflow's ``FINISHED``, ``KILLED`` (interrupted) or ``FAILED``.
        figures: the figure files to send (default none).
    """
    record = _record(run)
    if record is None:
        return
    try:
        from mlflow.entities import Metric

        client = _client(record["uri"])
        run_id = record["run_id"]
        scalars = {
            f"test_{key}": float(value)
            for key, value in (metrics or {}).items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        stages = [stage.to_json() for stage in run.stages]
        for stage in stages:
            for key in ("test_acc", "best_val_loss", "epochs", "seconds"):
                if isinstance(stage.get(key), (int, float)):
                    scalars[f"stage.{stage.get('name')}.{key}"] = float(stage[key])
        now = int(time.time() * 1000)
        if scalars:
            client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in scalars.items()])
        client.log_dict(run_id, stages, "stages.json")
        if run.kept is not None:
            client.set_tag(run_id, "cnnlab.kept", run.kept.why[:5000])
        _log_files(client, run_id, files.root, [getattr(files, name) for name in RUN_FILES] + list(figures or []))
        client.set_terminated(run_id, status)
    except CnnlabError:
        raise
    except Exception as exc:  # noqa: BLE001  the tracker is a copy: its failure must not stop the run
        log.warning(
            "MLflow run %s not completed (%s); the run folder has everything",
            record["run_id"],
            str(exc).splitlines()[0][:160],
        )


def log_model_files(files: Any, run: RunRecord, paths: list[Path]) -> None:
    """Adds exported model files (and model.json) to the run's MLflow run, when it is tracked."""
    record = _record(run)
    if record is None:
        return
    try:
        _log_files(_client(record["uri"]), record["run_id"], files.root, paths)
    except CnnlabError:
        raise
    except Exception as exc:  # noqa: BLE001  the tracker is a copy: its failure must not stop the command
        log.warning("model files not sent to MLflow (%s)", str(exc).splitlines()[0][:160])
