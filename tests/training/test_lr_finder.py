"""The learning-rate finder: its pick, the weights it leaves alone, ``--lr auto`` and ``cnnlab lr-find``."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml

from conftest import png_size, read_json, write_photo_crops

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _digits_stage(tmp_path, **options):
    from cnnlab.config import build_config
    from cnnlab.training.record import ModelRecord, RunRecord
    from cnnlab.training.run_dir import RunFiles
    from cnnlab.training.run_fit import _module_kwargs
    from cnnlab.training.stage_fit import prepare_stage
    from cnnlab.training.stage_plan import plan_stages
    from cnnlab.training.start import RunContext, prepare_inputs

    config = build_config(data="digits", **options)
    data, preprocess, model, _ = prepare_inputs(config)
    record = RunRecord(class_names=data.class_names, preprocess=preprocess, model=ModelRecord(name=config.model.name))
    ctx = RunContext(config, RunFiles(tmp_path), data, model, record)
    stage = dataclasses.replace(plan_stages(config, False)[0], lr="auto")
    return model, prepare_stage(ctx, stage, _module_kwargs(ctx))


def test_the_pick_is_sane_and_the_weights_are_those_before(tmp_path):
    from cnnlab.training.lr_finder import RULES, find_lr

    model, inputs = _digits_stage(tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    finding = find_lr(inputs.module, inputs.datamodule, inputs.train_cfg, "train", tmp_path)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # restored exactly, BatchNorm statistics too
    assert 1e-4 <= finding.lr <= 0.3, finding.picks  # Adam on the lesson's CNN: not the ends of the range
    assert set(finding.picks) == set(RULES) and finding.steps >= 50
    assert min(finding.losses[10:]) < 0.9 * finding.losses[10]  # the loss did fall as the rate grew
    assert not list(tmp_path.glob(".lr-find-*"))  # Lightning's saved state is cleaned up


def test_train_lr_auto_trains_at_the_pick_and_records_it(cli, tmp_path):
    code, out, err = cli("train", "digits", "--lr", "auto", "--epochs", "2", "--runs-dir", tmp_path, "--name", "auto")
    assert code == 0, err
    run = tmp_path / "auto"
    found = read_json(run / "run.json")["lr_find"]
    saved = yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"]
    assert isinstance(saved, float) and saved == found["lr"] == read_json(run / "run.json")["stages"][0]["lr"]
    assert f"pick {found['lr']:.3g}" in out and found["rule"] in out
    assert png_size(run / "lr_find.png")[0] > 500
    assert "picked by the learning-rate finder" in (run / "report.html").read_text()
    history = (run / "metrics.csv").read_text()
    assert f"{found['lr']:.6g}"[:5] in history  # the epochs ran at the picked rate


def test_lr_find_on_a_pretrained_model_finds_stage_one_on_cached_features(cli, tmp_path):
    photos = write_photo_crops(tmp_path / "photos", per_class=12)
    code, out, err = cli(
        "lr-find",
        photos,
        "--model",
        "efficientnet_lite0",
        "--pretrained",
        "--batch-size",
        "4",
        "--out",
        tmp_path / "found",
    )
    assert code == 0, err
    found = read_json(tmp_path / "found" / "lr_find.json")
    assert found["stage"] == "frozen" and "pick: --lr" in out
    assert "backbone features computed once" in out  # the head on cached features, as train's stage 1
    png_size(tmp_path / "found" / "lr_find.png")


def test_bad_rates_are_one_line_errors(cli, tmp_path):
    code, _, err = cli("train", "digits", "--lr", "fast")
    assert code == 2 and "--lr" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("lr-find", "digits", "--start-lr", "0.1", "--end-lr", "0.01", "--out", tmp_path / "x")
    assert code == 2 and "--start-lr" in err and len(err.strip().splitlines()) == 1
    from cnnlab.config import build_config
    from cnnlab.errors import CnnlabError

    with pytest.raises(CnnlabError, match="--lr must be a number or auto"):
        build_config(lr="fastest")
