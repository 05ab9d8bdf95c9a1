"""``cnnlab prune``: structured pruning really shrinks the network; the pruned run reopens without pickle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import batchnorm_statistics, read_json, unnamed_run_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: no OpenMP spin-waits


def test_structured_pruning_makes_a_smaller_run_every_command_takes(cli, run_copy, trained_shapes) -> None:
    code, out, err = cli(
        "prune", run_copy, "--sparsity", "0.5", "--ranking", "layer", "--finetune-epochs", "1", "--format", "json"
    )
    assert code == 0, err
    table = json.loads(out)  # training's progress went to stderr
    data = table["data"]
    assert data["achieved"] == pytest.approx(0.5, abs=0.02)  # half of every hidden layer's channels
    pruned = run_copy / "pruned" / "structured-50"
    from cnnlab.training.checkpoint import load_trained
    from cnnlab.training.run_dir import RunFiles

    before, after = load_trained(RunFiles(run_copy)).model, load_trained(RunFiles(pruned)).model
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(after) < 0.35 * count(before)  # in and out channels both halve
    x = torch.rand(4, 3, 20, 20)
    assert after(x).shape == before(x).shape == (4, 3)
    # The files hold plain tensors: no unpickling needed, and a pickle-only loader is not involved.
    torch.load(pruned / "checkpoints" / "best.ckpt", weights_only=True)
    from safetensors.torch import load_file

    assert load_file(str(pruned / "pruned.safetensors"))["features.0.weight"].shape[0] == 16
    assert json.loads((pruned / "architecture.json").read_text())["resized"]["features.0"] == {"out_channels": 16}
    for command in (
        ["evaluate", pruned],
        ["predict", pruned, trained_shapes[1] / "left" / "img_000.png"],
        ["export", pruned, "--format", "torchscript"],
    ):
        code, out, err = cli(*command)
        assert code == 0, (command, err)
    assert not unnamed_run_files(run_copy) and not unnamed_run_files(pruned)


def test_unstructured_pruning_reaches_the_sparsity_and_fine_tuning_keeps_it(cli, run_copy) -> None:
    code, _, err = cli("prune", run_copy, "--sparsity", "0.7", "--unstructured", "--finetune-epochs", "1")
    assert code == 0, err
    from cnnlab.deploy.prune_network import weight_sparsity
    from cnnlab.training.checkpoint import load_trained
    from cnnlab.training.run_dir import RunFiles

    model = load_trained(RunFiles(run_copy / "pruned" / "unstructured-70")).model
    assert weight_sparsity(model) == pytest.approx(0.7, abs=0.005)
    assert not (run_copy / "pruned" / "unstructured-70" / "architecture.json").exists()  # same shapes


@pytest.mark.parametrize("sparsity", ["0", "1", "1.5", "-0.2"])
def test_sparsity_outside_zero_one_is_refused(cli, run_copy, sparsity) -> None:
    code, _, err = cli("prune", run_copy, "--sparsity", sparsity)
    assert code == 2 and "--sparsity must be between 0 and 1" in err and err.count("\n") == 1
    assert not (run_copy / "pruned").exists()


def test_global_ranking_takes_the_channels_from_where_they_matter_least(cli, run_copy) -> None:
    from cnnlab.training.checkpoint import load_trained
    from cnnlab.training.run_dir import RunFiles

    code, _, err = cli("prune", run_copy, "--sparsity", "0.5", "--finetune-epochs", "0")
    assert code == 0, err
    pruned = run_copy / "pruned" / "structured-50"
    assert _pruning_record(pruned)["ranking"] == "global"  # the default, and the table says it
    assert any(
        n.startswith("channels ranked across the whole network")
        for n in read_json(pruned / "tables" / "prune.json")["notes"]
    )

    def widths(run: Path) -> list[int]:
        return [m.out_channels for m in load_trained(RunFiles(run)).model.modules() if isinstance(m, torch.nn.Conv2d)]

    kept = [after / before for before, after in zip(widths(run_copy), widths(pruned), strict=True)]
    assert sum(widths(pruned)) == pytest.approx(0.5 * sum(widths(run_copy)), rel=0.1)  # half the channels in all
    assert max(kept) - min(kept) > 0.1  # but not half of each layer
    assert min(kept) >= 0.2 - 1e-9  # no layer loses more than 80%


def _pruning_record(run) -> dict:
    return json.loads((run / "run.json").read_text())["pruning"]


def test_fine_tuning_stops_once_validation_recovers_and_keeps_its_best_epoch(cli, run_copy, monkeypatch) -> None:
    # What is tested is the stop, so the pruning is made to hurt: weight magnitude, no refitted layers
    # (Taylor importance and refitting keep this easy task at 100% up to 96% of the channels). At 80%
    # the tiny model then drops to 67% on validation and needs several epochs back.
    from cnnlab.deploy import prune_run

    by_magnitude = prune_run.prune_channels

    def every_layer_by_magnitude(model, example, ratio, round_to, labelled, **how):
        return by_magnitude(model, example, ratio, round_to, ranking="layer")

    monkeypatch.setattr(prune_run, "prune_channels", every_layer_by_magnitude)
    monkeypatch.setattr(prune_run, "reconstruct_layers", lambda *args: [])
    code, _, err = cli("prune", run_copy, "--sparsity", "0.8", "--finetune-epochs", "40")
    assert code == 0, err
    pruned = run_copy / "pruned" / "structured-80"
    record = _pruning_record(pruned)
    assert record["val_accuracy_before_finetune"] < record["parent_val_accuracy"]
    assert 1 < record["recovered_at_epoch"] == record["finetune_epochs"] < 40  # stopped, not out of epochs
    assert record["val_accuracy"] >= record["parent_val_accuracy"] - 1 / 18 - 1e-9  # 18 validation images
    import pandas as pd

    history = pd.read_csv(pruned / "metrics.csv").dropna(subset=["val_acc"])
    stage = json.loads((pruned / "run.json").read_text())["stages"][-1]
    assert stage["select"] == "accuracy" and stage["val_at_best"]["accuracy"] == pytest.approx(history["val_acc"].max())
    assert record["val_accuracy"] == pytest.approx(history["val_acc"].max())  # the kept weights are the best epoch's


def _point(sparsity: float, val_drop: float, files):
    """What one measured sparsity returns (no model: the bisection reads only the figures)."""
    from cnnlab.deploy.prune_run import Pruned
    from cnnlab.tables import Table

    return Pruned(
        files,
        Table(
            "t",
            [],
            [],
            [],
            {
                "from": "runs/base",
                "kind": "structured",
                "requested": sparsity,
                "achieved": sparsity,
                "params": 100,
                "parent_params": 200,
                "parent_val_accuracy": 0.9,
                "val_accuracy": 0.9 - val_drop / 100,
                "parent_test_accuracy": 0.9,
                "final_accuracy": 0.9 - val_drop / 100,
                "parent_ms": 10.0,
                "pruned_ms": 10.0 * (1 - sparsity),
                "speedup_batch1": 1 / (1 - sparsity),
            },
        ),
    )


def test_max_drop_bisection_finds_the_largest_sparsity_within_the_drop(tmp_path) -> None:
    from cnnlab.deploy.prune_sweep import sweep_sparsities
    from cnnlab.training.run_dir import RunFiles

    tried = []

    def drop(sparsity: float) -> float:  # 1 point per 10% up to 50%, then 5 per 10%
        return 10 * sparsity if sparsity <= 0.5 else 5 + 50 * (sparsity - 0.5)

    def measure(sparsity: float):
        tried.append(sparsity)
        return _point(sparsity, drop(sparsity), RunFiles(tmp_path / f"s{round(100 * sparsity)}"))

    for max_drop, expected in [(5.0, 0.5), (4.0, 0.4), (10.0, 0.6), (0.5, None)]:
        tried.clear()
        result = sweep_sparsities(measure, max_drop)
        assert len(tried) <= 4  # a bisection of 8 points, not a full sweep
        if expected is None:
            assert result.table.data["requested"] == min(tried) and "no sparsity" in result.warnings[0]
            assert result.sweep.data["found"] is False
        else:
            assert result.table.data["requested"] == expected and not result.warnings
            assert all(drop(s) > max_drop + 1e-9 for s in tried if s > expected)
        assert result.sweep.data["chosen"] == result.table.data["requested"]
        assert len(result.sweep.rows) == len(tried) + 1  # the original, then every point measured
        assert (result.files.root / "prune_sweep.png").stat().st_size > 1000


def test_max_drop_sweep_on_a_tiny_run_keeps_the_largest_sparsity_within_the_drop(cli, run_copy) -> None:
    code, out, err = cli("prune", run_copy, "--max-drop", "0", "--finetune-epochs", "3")
    assert code == 0, err
    assert "Pruning sweep of base" in out and "sweep: " in out
    runs = sorted(p.name for p in (run_copy / "pruned").iterdir())
    sweep = json.loads(next((run_copy / "pruned").glob("*/tables/prune_sweep.json")).read_text())
    points = sweep["data"]["points"]
    assert len(points) == len(runs) >= 3  # every point measured is a pruned run of its own
    kept = [p for p in points if 100 * (p["parent_val_accuracy"] - p["val_accuracy"]) <= 1e-6]
    if kept:
        assert sweep["data"]["chosen"] == max(p["requested"] for p in kept)
        failed_above = [p for p in points if p["requested"] > sweep["data"]["chosen"]]
        assert all(100 * (p["parent_val_accuracy"] - p["val_accuracy"]) > 0 for p in failed_above)
    chosen = run_copy / "pruned" / f"structured-{round(100 * sweep['data']['chosen'])}"
    assert (chosen / "prune_sweep.png").stat().st_size > 1000
    assert "Pruning sweep of base" in (chosen / "report.html").read_text()


def test_a_drop_beyond_the_limit_is_said_in_the_console_run_json_and_both_reports(cli, run_copy) -> None:
    # 98% of the channels and no fine-tuning: the tiny model falls to chance.
    code, out, err = cli(
        "prune", run_copy, "--sparsity", "0.98", "--ranking", "layer", "--finetune-epochs", "0", "--max-drop", "1"
    )
    assert code == 0, err
    warning = [line for line in err.splitlines() if line.startswith("warning: pruning --sparsity 0.98 lost")]
    assert len(warning) == 1 and "more than 1)" in warning[0] and "--max-drop 1" in warning[0]
    assert "leave out --finetune-epochs 0" in warning[0]  # what to try: this run was not fine-tuned
    assert "WARNING" not in out  # said once, after the table
    pruned = run_copy / "pruned" / "structured-98"
    record = _pruning_record(pruned)
    assert record["warnings"] and record["max_drop"] == 1
    assert any("lost" in note for note in json.loads((pruned / "run.json").read_text())["notes"])
    assert "lost" in (pruned / "report.html").read_text()
    parent = (run_copy / "report.html").read_text()
    assert "Pruned copies of this run" in parent and "structured-98: pruning --sparsity 0.98 lost" in parent


def test_a_fine_tuning_that_kept_nothing_says_to_lower_its_rate() -> None:
    from cnnlab.deploy.prune_run import verdict

    measured = {"kind": "structured", "requested": 0.5, "parent_test_accuracy": 0.87, "speedup_batch1": 1.5}
    kept_nothing = {**measured, "final_accuracy": 0.73, "finetune_epochs": 9, "finetune_kept": False}
    (warning,) = verdict({**kept_nothing, "finetune_lr": 1e-3}, 2.0)
    assert "never beat the pruned copy on validation" in warning and "--finetune-lr 0.0001" in warning
    (warning,) = verdict({**kept_nothing, "finetune_kept": True, "final_accuracy": 0.78, "finetune_lr": 1e-4}, 2.0)
    assert "lost 9.0 points" in warning and "--finetune-lr" not in warning  # it helped: not the rate


def test_no_speed_up_is_said(cli, run_copy, monkeypatch) -> None:
    import cnnlab.deploy.prune_run as prune

    monkeypatch.setattr(prune, "MIN_SPEEDUP", 1000.0)  # no pruned model is 1000x faster
    code, _, err = cli("prune", run_copy, "--sparsity", "0.3", "--unstructured", "--finetune-epochs", "0")
    assert code == 0, err
    assert "warning: the pruned model is no faster than its parent" in err and "--structured" in err
    assert _pruning_record(run_copy / "pruned" / "unstructured-30")["warnings"]


def test_the_parents_report_lists_its_pruned_copies(cli, run_copy) -> None:
    for sparsity in ("0.25", "0.5"):
        code, _, err = cli("prune", run_copy, "--sparsity", sparsity, "--finetune-epochs", "1")
        assert code == 0, err
    html = (run_copy / "report.html").read_text()
    section = html[html.index('<section id="deployment">') :]
    section = section[: section.index("</section>")]
    assert "Pruned copies of this run" in section
    assert section.index("structured-25") < section.index("structured-50")  # by sparsity
    for run in ("structured-25", "structured-50"):
        record = _pruning_record(run_copy / "pruned" / run)
        assert f"{record['speedup_batch1']:.2f}x" in section and f"{record['params']:,}" in section


def test_neither_sparsity_nor_drop_is_refused(cli, run_copy) -> None:
    code, _, err = cli("prune", run_copy)
    assert code == 2 and "--sparsity" in err and "--max-drop" in err and err.count("\n") == 1


def test_a_refitted_copy_fine_tunes_with_its_batchnorm_statistics_fixed_at_the_stage_2_rate(
    cli, lite0_photos_run, tmp_path
) -> None:
    """Lite0's pruned layers are refitted to the parent's outputs through its BatchNorm statistics:
    fine-tuning keeps them (training-mode BatchNorm would normalise with each batch's) and trains at
    the run's --finetune-lr, as stage 2 did."""
    from safetensors.torch import load_file

    from cnnlab.training.checkpoint import load_trained
    from cnnlab.training.run_dir import RunFiles, read_run_config

    run = Path(shutil.copytree(lite0_photos_run[0], tmp_path / "lite0"))
    code, out, err = cli("prune", run, "--sparsity", "0.5", "--finetune-epochs", "1")
    assert code == 0, err
    pruned = run / "pruned" / "structured-50"
    meta = read_json(pruned / "run.json")
    assert meta["pruning"]["refitted"] and meta["pruning"]["finetune_epochs"] == 1
    assert meta["pruning"]["finetune_lr"] == read_run_config(RunFiles(run)).transfer.finetune_lr == 1e-4
    assert "fine-tuned at lr 0.0001 with BatchNorm statistics kept fixed" in out
    start = load_file(str(pruned / "pruned.safetensors"))
    tuned = load_trained(RunFiles(pruned)).model.state_dict()
    statistics = batchnorm_statistics(start)
    assert statistics and all(torch.equal(tuned[k], v) for k, v in statistics.items())
    assert not all(torch.equal(tuned[k], v) for k, v in start.items() if k.endswith("weight"))  # it did train


def test_fine_tuning_that_never_beats_the_pruned_copy_on_validation_keeps_the_copy(cli, run_copy) -> None:
    from safetensors.torch import load_file

    from cnnlab.training.checkpoint import load_trained
    from cnnlab.training.run_dir import RunFiles

    # A rate far too high: every epoch ends below the copy as pruned (BatchNorm re-estimated, ~90%).
    code, out, err = cli("prune", run_copy, "--sparsity", "0.5", "--finetune-epochs", "1", "--finetune-lr", "5")
    assert code == 0, err
    pruned = run_copy / "pruned" / "structured-50"
    record = _pruning_record(pruned)
    assert record["finetune_kept"] is False and record["finetune_epochs"] >= 1
    # what every command loads is the copy as pruned, and its scores are that copy's
    start, kept = load_file(str(pruned / "pruned.safetensors")), load_trained(RunFiles(pruned)).model.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in start.items())
    assert read_json(pruned / "metrics.json")["test"]["accuracy"] == record["accuracy_before_finetune"]
    assert record["final_accuracy"] == record["accuracy_before_finetune"]
    assert "pruned structured (fine-tuning kept nothing)" in out
    run = read_json(pruned / "run.json")
    assert any(note.startswith("Fine-tuning never beat the pruned copy") for note in run["notes"])
    # the report's stage table does not present the fine-tuning's epoch as the model scored
    assert run["stages"][-1]["replaced_best"] is False and run["stages"][-1]["best_val_loss"] is None
    report = (pruned / "report.html").read_text()
    assert "(not kept)" in report
    # where the pruned run's time went, as a trained run's report says it
    assert {"model", "training", "evaluation"} <= set(run["timing"]["phases"]) and run["timing"]["total_seconds"] > 0
    assert "Time by phase" in report and "model " in report
