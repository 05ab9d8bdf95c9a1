"""``--refit``: after the stages chose their epochs on validation, the model trains again on train + val.

Tiny real-photo runs (crops of two photos, pretrained EfficientNet-Lite0 at 64 px, seconds each).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import lightning as L
import pytest
import torch

from cnnlab.cli.main import main
from cnnlab.training import refit
from cnnlab.training.checkpoint import model_state, read_checkpoint
from conftest import read_json, write_photo_crops

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARGS = [
    "--model",
    "efficientnet_lite0",
    "--pretrained",
    "--image-size",
    "64",
    "--frozen-epochs",
    "6",
    "--finetune-epochs",
    "2",
    "--finetune-select",
    "loss",
    "--deterministic",
    "--seed",
    "3",
]


class SeenImages(L.Callback):
    """Counts the images (or feature rows) each refit epoch trains on."""

    def __init__(self) -> None:
        self.per_epoch: dict[tuple[str, int], int] = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        key = (pl_module.metadata["stage"], trainer.current_epoch)
        self.per_epoch[key] = self.per_epoch.get(key, 0) + len(batch[1])


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_photo_crops(tmp_path_factory.mktemp("refit") / "photos", per_class=24)


@pytest.fixture(scope="module")
def refitted(photos: Path, tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> tuple[Path, str, SeenImages]:
    """(run, printed output, images seen per refit epoch) of one ``--refit on`` run, trained once for the
    module: every test that needs the deterministic refit run reads this one."""
    counter = SeenImages()
    fit = refit.fit_until_ctrl_c

    def counting(trainer, *args):
        trainer.callbacks.append(counter)
        return fit(trainer, *args)

    runs = tmp_path_factory.mktemp("refitted") / "runs"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as monkeypatch, contextlib.redirect_stdout(printed):
        monkeypatch.setattr(refit, "fit_until_ctrl_c", counting)
        code = main(["train", str(photos), *ARGS, "--refit", "on", "--runs-dir", str(runs)])
    assert code == 0, printed.getvalue()[-2000:]
    (run,) = runs.iterdir()
    return run, printed.getvalue(), counter


def _run(cli, photos: Path, runs: Path, *extra: str) -> Path:
    code, _, err = cli("train", photos, *ARGS, "--runs-dir", runs, *extra)
    assert code == 0, err
    (run,) = runs.iterdir()
    return run


def test_refit_trains_the_chosen_epochs_on_train_and_val(refitted: tuple[Path, str, SeenImages]) -> None:
    run, out, seen = refitted
    meta = read_json(run / "run.json")
    splits = meta["data"]["splits"]
    pool = splits["train"]["count"] + splits["val"]["count"]
    record = meta["refit"]
    chosen = {
        s["name"]: s["val_at_best"]["epoch"] for s in meta["stages"] if s["name"] == "frozen" or s["replaced_best"]
    }
    assert record["done"] and record["images"] == pool and record["val_images"] == splits["val"]["count"]
    assert {c["stage"]: c["epochs"] for c in record["chosen"]} == chosen
    assert {r["name"]: r["epochs"] for r in record["stages"]} == {f"refit-{k}": v for k, v in chosen.items()}
    # Every refit epoch saw every labelled image but the test split's, once; no more epochs than chosen.
    for name, epochs in chosen.items():
        counts = [n for (stage, _), n in sorted(seen.per_epoch.items()) if stage == f"refit-{name}"]
        assert counts == [pool] * epochs
    assert f"refit on {pool} images (train + val) with stage 1: {chosen['frozen']} epoch" in out
    assert f"test acc {100 * read_json(run / 'metrics.json')['test']['accuracy']:.2f}% (the model validation" in out
    # The final model is the refit's: scored at the end; the validated one is kept beside it.
    metrics = read_json(run / "metrics.json")["test"]
    assert record["test_acc"] == metrics["accuracy"]
    kept = (meta.get("kept") or {}).get("stage", "frozen")
    assert record["validated_test_acc"] == next(s["test_acc"] for s in meta["stages"] if s["name"] == kept)
    best, validated = (model_state(read_checkpoint(run / "checkpoints" / f)) for f in ("best.ckpt", "validated.ckpt"))
    assert not torch.equal(best["classifier.weight"], validated["classifier.weight"])
    assert not (run / "checkpoints" / "refit.ckpt").exists()
    # metrics.csv (the learning curves) holds only the validated stages' epochs.
    assert "refit" not in (run / "metrics.csv").read_text()
    assert meta["timing"]["train_seconds"] == pytest.approx(
        sum(s["seconds"] for s in meta["stages"]) + record["seconds"], abs=0.02
    )
    page = (run / "report.html").read_text()
    assert f"Refit on {pool} images (train + val)" in page and "validated.ckpt" in page


def test_refit_off_is_the_validated_run_and_on_leaves_its_stages_alone(
    cli, photos: Path, tmp_path: Path, refitted: tuple[Path, str, SeenImages]
) -> None:
    off = _run(cli, photos, tmp_path / "off", "--refit", "off")
    on = refitted[0]
    meta_off, meta_on = read_json(off / "run.json"), read_json(on / "run.json")
    assert meta_off["refit"] == {"done": False, "why": "--refit off"}
    assert not (off / "checkpoints" / "validated.ckpt").exists()
    # Off: the run ends with the validated model, scored once at the end (as before the refit existed).
    kept = (meta_off.get("kept") or {}).get("stage", "frozen")
    assert meta_off["stages"][-1]["test_acc"] == read_json(off / "metrics.json")["test"]["accuracy"]
    # On: the same stages (same seed), chose the same epochs; the refit comes after them.
    assert [(s["name"], s["val_at_best"]) for s in meta_on["stages"]] == [
        (s["name"], s["val_at_best"]) for s in meta_off["stages"]
    ]
    validated = next(s["test_acc"] for s in meta_off["stages"] if s["name"] == kept)
    assert meta_on["refit"]["validated_test_acc"] == validated
    assert model_state(read_checkpoint(off / "checkpoints" / "best.ckpt"))["classifier.weight"].equal(
        model_state(read_checkpoint(on / "checkpoints" / "validated.ckpt"))["classifier.weight"]
    )


def test_auto_refits_small_pretrained_sets_only(cli, tmp_path: Path) -> None:
    from cnnlab.config import build_config
    from cnnlab.data.types import ImageSet, PreparedData

    def data(train: int, val: int) -> PreparedData:
        def split(n: int) -> ImageSet:
            return ImageSet(torch.zeros(n, 3, 2, 2, dtype=torch.uint8), torch.arange(n) % 2, [str(i) for i in range(n)])

        return PreparedData({"train": split(train), "val": split(val), "test": split(4)}, ["a", "b"], "x")

    config = build_config(data="x")
    assert refit.refit_wanted(config, data(180, 60), True, False, False) == ""
    assert "1,200 train + val images" in refit.refit_wanted(config, data(1000, 200), True, False, False)
    assert refit.refit_wanted(config, data(180, 60), False, False, False).startswith("trained from scratch")
    assert refit.refit_wanted(build_config(data="x", refit="on"), data(1000, 200), False, False, False) == ""
    with pytest.raises(Exception, match="--refit on needs a validation split"):
        refit.refit_wanted(build_config(data="x", refit="on"), data(180, 0), True, False, False)
    code, _, err = cli("train", "digits", "--refit", "sometimes")
    assert code == 2 and "--refit" in err


def test_a_refit_interrupted_mid_epoch_resumes_to_the_uninterrupted_model(
    cli, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refitted: tuple[Path, str, SeenImages]
) -> None:
    whole = refitted[0]

    class CtrlC(L.Callback):  # what Ctrl-C raises inside an epoch: Lightning shuts down gracefully
        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if trainer.current_epoch == 3:
                raise KeyboardInterrupt

    fit = refit.fit_until_ctrl_c

    def interrupting(trainer, *args):
        trainer.callbacks.append(CtrlC())
        return fit(trainer, *args)

    monkeypatch.setattr(refit, "fit_until_ctrl_c", interrupting)
    code, out, err = cli("train", photos, *ARGS, "--refit", "on", "--runs-dir", tmp_path / "cut")
    run = next((tmp_path / "cut").iterdir())
    assert code == 130 and f"cnnlab train --resume {run}" in out, (out, err)
    stopped = read_json(run / "run.json")
    assert stopped["status"] == "interrupted" and not stopped["refit"]["done"]
    assert not (run / "checkpoints" / "validated.ckpt").exists()  # best.ckpt is still the validated model
    monkeypatch.setattr(refit, "fit_until_ctrl_c", fit)
    code, out, err = cli("train", "--resume", run)
    assert code == 0, err
    meta, reference = read_json(run / "run.json"), read_json(whole / "run.json")
    assert meta["attempts"][-1]["resumed_at"] == "after epoch 3 of stage refit-frozen"
    assert meta["refit"]["done"] and meta["refit"]["chosen"] == reference["refit"]["chosen"]
    assert [r["epochs"] for r in meta["refit"]["stages"]] == [r["epochs"] for r in reference["refit"]["stages"]]
    assert read_json(run / "metrics.json")["test"] == read_json(whole / "metrics.json")["test"]
    resumed, uninterrupted = (
        model_state(read_checkpoint(r / "checkpoints" / "best.ckpt"))["classifier.weight"] for r in (run, whole)
    )
    assert torch.allclose(resumed, uninterrupted, atol=1e-6)  # the same model, to float rounding
