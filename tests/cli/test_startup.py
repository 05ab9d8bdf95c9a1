"""The command answers at once: ``cnnlab --help`` imports neither torch nor Lightning."""

from __future__ import annotations

import subprocess
import sys

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


def test_mlflow_is_imported_only_by_a_tracked_run() -> None:
    """Importing MLflow costs 1.2-1.9 s here: the training, evaluation and deploy paths leave it to --tracking."""
    probe = ("import sys\n"
             "import cnnlab.cli.train_cmd, cnnlab.api, cnnlab.training.fit, cnnlab.evaluation.run\n"
             "import cnnlab.deploy.runtime\n"
             "import cnnlab.training.tracking, cnnlab.evaluation.compare\n"
             "print('mlflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"
