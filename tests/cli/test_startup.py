"""The command answers at once: ``cnnlab --help`` imports neither torch nor Lightning."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

import psutil
import pytest

from conftest import write_shapes_folder

HEAVY = ("torch", "lightning", "numpy", "pandas", "matplotlib", "timm", "PIL")


def test_help_and_version_import_nothing_heavy() -> None:
    probe = (
        "import sys\n"
        "from cnnlab.cli.main import main\n"
        "for argv in (['--help'], ['info', '--help'], ['train', '--help'], ['--version']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert "cnnlab 0.1.0" in result.stdout


def test_every_option_of_every_command_has_help(capsys) -> None:
    import argparse

    from cnnlab.cli.main import build_parser

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
            elif action.dest not in ("help", "version"):
                assert action.help, f"{parser.prog}: {action.option_strings or action.dest} has no help"

    walk(build_parser())


def _probe(code: str) -> str:
    """The standard output of ``code`` run in a fresh interpreter (what it imports is its own)."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_mlflow_is_imported_only_by_a_tracked_run() -> None:
    """Importing MLflow costs 1.2-1.9 s here: the training, evaluation and deploy paths leave it to --tracking."""
    probe = (
        "import sys\n"
        "import cnnlab.cli.train_cmd, cnnlab.api, cnnlab.training.run_fit, cnnlab.evaluation.run_evaluation\n"
        "import cnnlab.deploy.runtime\n"
        "import cnnlab.training.tracking, cnnlab.evaluation.runs_summary\n"
        "print('mlflow' in sys.modules)\n"
    )
    assert _probe(probe).strip().splitlines()[-1] == "False"


# What a training run has no use for: the deploy, serving, tuning and label-cleaning stacks, and timm
# for an own CNN (``import timm`` loads every model definition: 1-3 s).
NOT_FOR_TRAINING = (
    "mlflow",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "fastapi",
    "starlette",
    "uvicorn",
    "optuna",
    "cleanlab",
    "torch_pruning",
    "timm",
)
NOT_FOR_TRAINING_CNNLAB = (
    "cnnlab.deploy.",
    "cnnlab.serving.",
    "cnnlab.tuning",
    "cnnlab.cleaning",
    "cnnlab.comparison.",
)
PARSER_SETTINGS = (
    "cnnlab.deploy.settings",
    "cnnlab.serving.settings",
    "cnnlab.explain.settings",
    "cnnlab.comparison.options",
)  # flag defaults


def test_training_start_up_imports_no_deploy_serving_or_explain_stack() -> None:
    """What ``cnnlab train`` imports before its data step (its start-up phase): the explain stack (Grad-CAM)
    comes later, for the report's figures, and only then; deploy, serving and tuning never."""
    probe = (
        "import sys\n"
        "from cnnlab.cli.main import build_parser\n"
        "build_parser()\n"
        "from cnnlab.api import resume, run_training\n"
        "from cnnlab.training.distributed import process_rank\n"
        "from cnnlab.training.record import RunRecord\n"
        "from cnnlab.training.run_dir import read_optional_json\n"
        "from cnnlab.training.run_fit import TrainingInterrupted\n"
        "print(*sorted(sys.modules))\n"
    )
    modules = _probe(probe).split()
    assert "lightning" in modules  # the probe imported the training stack
    top = {name.split(".")[0] for name in modules}
    assert sorted(top & {*NOT_FOR_TRAINING, "pytorch_grad_cam"}) == []
    stack = (*NOT_FOR_TRAINING_CNNLAB, "cnnlab.explain.")
    assert [name for name in modules if name.startswith(stack) and name not in PARSER_SETTINGS] == []


@dataclass
class TrainProcess:
    lines: list[str]
    code: int
    modules: list[str]  # sys.modules when the command returned
    seconds_after_last_line: float  # wall clock from the last line read to the process's end
    cpu_after_last_line: float  # the CPU time the process spent in that while


@pytest.fixture(scope="module")
def tiny_train(tmp_path_factory: pytest.TempPathFactory) -> TrainProcess:
    """``cnnlab train`` in its own process (as ``python -m cnnlab`` runs it), each line timed as it is read."""
    root = tmp_path_factory.mktemp("startup")
    shapes = write_shapes_folder(root / "shapes", per_class=10, size=16)
    probe = (
        "import sys\n"
        "from cnnlab.cli.main import main\n"
        "code = main(sys.argv[1:])\n"
        "print('modules:', *sorted(sys.modules), flush=True)\n"
        "sys.exit(code)\n"
    )
    argv = [
        "train",
        str(shapes),
        "--model",
        "fast_cnn",
        "--weight-decay",
        "5e-4",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--runs-dir",
        str(root / "runs"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", probe, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    watched = psutil.Process(process.pid)
    lines: list[str] = []
    last, cpu = time.monotonic(), 0.0
    assert process.stdout is not None
    for line in process.stdout:
        last = time.monotonic()
        with_cpu = watched.cpu_times()
        cpu = with_cpu.user + with_cpu.system + with_cpu.children_user + with_cpu.children_system  # as wait4 counts
        lines.append(line.rstrip("\n"))
    _, status, usage = os.wait4(process.pid, 0)
    ended = time.monotonic()
    process.returncode = os.waitstatus_to_exitcode(status)
    modules = next((line.split()[1:] for line in lines if line.startswith("modules: ")), [])
    return TrainProcess(lines, process.returncode, modules, ended - last, usage.ru_utime + usage.ru_stime - cpu)


def test_training_imports_no_deploy_serving_or_tuning_stack(tiny_train: TrainProcess) -> None:
    assert tiny_train.code == 0, "\n".join(tiny_train.lines[-20:])
    assert "torch" in tiny_train.modules and "lightning" in tiny_train.modules  # the probe saw the run's modules
    top = {name.split(".")[0] for name in tiny_train.modules}
    assert sorted(top & set(NOT_FOR_TRAINING)) == []
    stray = [
        name for name in tiny_train.modules if name.startswith(NOT_FOR_TRAINING_CNNLAB) and name not in PARSER_SETTINGS
    ]
    assert stray == []


def test_process_ends_promptly_after_its_last_line(tiny_train: TrainProcess) -> None:
    """The interpreter's collections at exit walked every object torch & co. left (2.1 s of CPU, 7 s of
    wall clock on a busy machine, for any run). The CPU it spends is what is bounded: the wall clock
    on a shared machine is mostly waiting for a core."""
    assert tiny_train.code == 0, "\n".join(tiny_train.lines[-20:])
    assert tiny_train.lines[-1].startswith("modules: ")
    assert tiny_train.cpu_after_last_line < 1.0, f"{tiny_train.cpu_after_last_line:.2f} s of CPU after the last line"


def test_collector_is_paused_while_importing_and_restored() -> None:
    import gc

    from cnnlab.cli.startup import collector_paused

    def failing_import() -> None:
        with collector_paused():
            assert not gc.isenabled()
            raise ImportError("a failed import still gives the collector back")

    assert gc.isenabled()
    with pytest.raises(ImportError):
        failing_import()
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # one paused by its caller stays paused
    finally:
        gc.enable()
