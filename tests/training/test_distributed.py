"""Two processes, one run (DDP on the CPU over gloo): the same results as one process, one run folder,
and only rank 0 writes.

The two ranks are this test process (rank 0) and a child forked from it (rank 1), each given the
environment Lightning's launcher gives the processes of ``cnnlab train --devices 2`` (MASTER_ADDR,
MASTER_PORT, WORLD_SIZE, NODE_RANK, LOCAL_RANK); both run the same commands, as the processes of a
real launch do. Forking spares starting Python, torch and Lightning again (seconds each); launches by
torchrun and by the command itself are tested in test_scale_out.py. Rank 1 records every file write
it makes (an audit hook): none is allowed.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import sys
from pathlib import Path

import pytest
import torch
from ddp_helpers import as_rank_0, free_port, install, writes_by_rank
from safetensors.torch import save_file

from cnnlab.cli.main import main
from cnnlab.config import build_config
from cnnlab.evaluation.run_evaluation import run_data
from cnnlab.models import create_model
from cnnlab.models.inference import predict_probs
from cnnlab.training.checkpoint import load_trained
from cnnlab.training.run_dir import open_run
from cnnlab.training.run_fit import fit
from conftest import fitted_meta, read_json, write_shapes_folder

# A rank left waiting for a peer that died waits inside torch (30 min): end the session instead.
pytestmark = pytest.mark.timeout(900, method="thread")

DIGITS = ["digits", "--epochs", "4", "--lr", "0.003", "--batch-size", "32", "--seed", "1"]
# simple_cnn started from a weights file: a two-stage transfer run (stage 1 on cached features).
TRANSFER = [
    "--model",
    "simple_cnn",
    "--frozen-epochs",
    "8",
    "--finetune-epochs",
    "2",
    "--finetune-lr",
    "1e-3",
    "--batch-size",
    "16",
    "--seed",
    "2",
    "--image-size",
    "20",
]
TWO = ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]


def _launcher_env(port: int, local_rank: int) -> dict[str, str]:
    """What Lightning's launcher sets for the processes of ``--devices 2`` on one machine."""
    return {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": "2",
        "NODE_RANK": "0",
        "LOCAL_RANK": str(local_rank),
    }


def _rank_1(commands: list[list[str]], env: dict[str, str], log: str, watched: str, output: str) -> None:
    """The forked rank 1: the same commands, every write under ``watched`` recorded."""
    os.environ.update(env)
    sys.stdout = sys.stderr = open(output, "w", buffering=1)  # noqa: SIM115  the rank's output until it exits
    install(log, watched)
    codes = []
    for command in commands:
        try:
            codes.append(main(command))
        except SystemExit as exc:
            codes.append(int(exc.code or 0))
    sys.stdout.flush()
    os._exit(max(codes))


@pytest.fixture(scope="module")
def pair(tmp_path_factory, one_torch_thread) -> dict:
    tmp = tmp_path_factory.mktemp("ddp")
    work, runs = tmp / "work", tmp / "work" / "runs"
    shapes = write_shapes_folder(work / "shapes", per_class=30)
    torch.manual_seed(0)
    weights = work / "start.safetensors"
    save_file(create_model("simple_cnn", num_classes=3, in_chans=3, image_size=(20, 20)).state_dict(), weights)
    transfer = [str(shapes), *TRANSFER, "--weights", str(weights)]
    # One process, same options and global batch: the reference (its folder of images decoded into
    # the cache first would leave rank 0 nothing to write, so the two-process run gets its own copy).
    one = {
        "digits": fit(
            build_config(
                data="digits",
                epochs=4,
                lr=0.003,
                batch_size=32,
                seed=1,
                accelerator="cpu",
                devices="1",
                runs_dir=str(tmp / "one"),
                name="digits",
            ),
            "test",
        ),
        "transfer": fit(
            build_config(
                data=str(write_shapes_folder(tmp / "shapes-one", per_class=30)),
                model="simple_cnn",
                weights=str(weights),
                frozen_epochs=8,
                finetune_epochs=2,
                finetune_lr=1e-3,
                batch_size=16,
                seed=2,
                image_size=20,
                accelerator="cpu",
                refit="off",  # as --refit auto decides for the two-process run
                devices="1",
                runs_dir=str(tmp / "one"),
                name="transfer",
            ),
            "test",
        ),
    }
    commands = [
        ["train", *DIGITS, *TWO, "--runs-dir", str(runs)],
        ["train", *transfer, *TWO, "--runs-dir", str(runs), "--name", "transfer"],
    ]
    port, log, child_output = free_port(), str(tmp / "writes.log"), str(tmp / "rank1.txt")
    cache = {"CNNLAB_CACHE_DIR": str(work / "cache")}  # watched too: a fresh decoded-image cache
    child = multiprocessing.get_context("fork").Process(
        target=_rank_1, args=(commands, {**_launcher_env(port, 1), **cache}, log, str(work), child_output)
    )
    out, err = io.StringIO(), io.StringIO()
    child.start()
    with as_rank_0({**_launcher_env(port, 0), **cache}, child):
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            codes = [main(command) for command in commands]
        child.join(timeout=300)
    return {
        "codes": codes,
        "child_code": child.exitcode,
        "out": out.getvalue(),
        "err": err.getvalue(),
        "child_output": Path(child_output).read_text(),
        "writes": writes_by_rank(log),
        "runs": runs,
        "one": one,
    }


def _single_process_score(run: Path) -> tuple[float, float]:
    """Accuracy and loss of the run's best checkpoint on its test split, scored here alone."""
    files = open_run(run)
    trained = load_trained(files)
    test = run_data(files, trained).splits["test"]
    probs = torch.cat([p for _, p in predict_probs(trained.model, test.images, trained.normalize)])
    accuracy = int((probs.argmax(1) == test.labels).sum()) / len(test.labels)
    loss = float(torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), test.labels))
    return accuracy, loss


def _complete(run: Path) -> dict:
    meta = read_json(run / "run.json")
    assert meta["status"] == "completed"
    for name in (
        "config.yaml",
        "metrics.csv",
        "metrics.json",
        "report.html",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "history.png",
        "confusion_matrix.png",
        "model_summary.txt",
    ):
        assert (run / name).is_file(), name
    return meta


def test_both_ranks_finish_and_only_rank_0_speaks(pair) -> None:
    assert pair["codes"] == [0, 0] and pair["child_code"] == 0, pair["err"][-2000:] + pair["child_output"][-2000:]
    assert pair["child_output"] == ""  # rank 1 prints nothing at all: no doubled lines
    assert pair["out"].count("test accuracy") == 2
    assert "2 processes (ddp" in pair["out"] and "global batch 32 = 2 x 16 per device" in pair["out"]
    assert "global batch 16 = 2 x 8 per device" in pair["out"]
    assert sorted(p.name for p in pair["runs"].iterdir()) == ["simple_cnn-digits", "transfer"]  # one folder each


def test_two_processes_train_like_one_with_the_same_global_batch(pair) -> None:
    run = pair["runs"] / "simple_cnn-digits"
    meta = _complete(run)
    ddp = read_json(run / "metrics.json")["test"]["accuracy"]
    one = fitted_meta(pair["one"]["digits"])["stages"][-1]["test_acc"]
    assert one > 0.8 and abs(ddp - one) < 0.05, (ddp, one)
    attempt = meta["attempts"][-1]
    assert (attempt["processes"], attempt["global_batch"], attempt["device_batch"]) == (2, 32, 16)
    epochs = [row.split(",")[1] for row in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == [str(e) for e in range(4) for _ in (0, 1)]  # one train row, one val row per epoch: rank 0's


def test_the_test_evaluation_equals_a_single_process_one(pair) -> None:
    for name in ("simple_cnn-digits", "transfer"):
        run = pair["runs"] / name
        saved = read_json(run / "metrics.json")["test"]
        accuracy, loss = _single_process_score(run)
        assert saved["accuracy"] == pytest.approx(accuracy, abs=1e-9)
        assert saved["loss"] == pytest.approx(loss, rel=1e-4)


def test_a_two_stage_transfer_run_on_two_processes(pair) -> None:
    run = pair["runs"] / "transfer"
    meta = _complete(run)
    frozen, finetune = meta["stages"]
    assert frozen["feature_cache"] and frozen["done"] and finetune["done"]  # stage 1 on gathered features
    one = fitted_meta(pair["one"]["transfer"])["stages"]
    assert abs(finetune["test_acc"] - one[-1]["test_acc"]) < 0.1, (finetune, one)
    assert read_json(run / "metrics.json")["test"]["accuracy"] >= 0.9
    assert {row.split(",")[0] for row in (run / "metrics.csv").read_text().splitlines()[1:]} == {"frozen", "finetune"}


def test_rank_1_writes_nothing_and_reads_the_image_cache_rank_0_wrote(pair) -> None:
    writes = pair["writes"].get("1", [])
    opened = [w for w in writes if w.startswith("sqlite3.connect")]
    assert opened and all("(read-only)" in w for w in opened)  # after rank 0 wrote it: the file was there
    assert [w for w in writes if not w.startswith("sqlite3.connect")] == []
