"""cnnlab data pack + training from the shards: round trip, bad files, ranks, bad packed folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.config import DataConfig
from cnnlab.data.pack_read import MANIFEST, PackedSplit, open_packed, read_manifest
from cnnlab.data.prepare import prepare_data
from cnnlab.errors import CnnlabError
from conftest import read_json, write_shapes_folder

pytest.importorskip("litdata")

SEED = 5


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> dict:
    """A shapes folder with one corrupt file, packed in small shards (several per split) by the CLI."""
    from cnnlab.cli.main import main

    root = tmp_path_factory.mktemp("pack")
    folder = write_shapes_folder(root / "shapes", per_class=30)
    (folder / "middle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out = root / "packed"
    code = main(["data", "pack", str(folder), str(out), "--shard-size", "0.01", "--seed", str(SEED)])
    return {"folder": folder, "out": out, "code": code, "root": root}


def test_pack_round_trips_the_prepared_folder(packed) -> None:
    assert packed["code"] == 0
    direct = prepare_data(DataConfig(source=str(packed["folder"]), image_store="memory"), SEED)
    from_shards = prepare_data(DataConfig(source=str(packed["out"])), SEED)
    assert from_shards.class_names == direct.class_names == ["left", "middle", "right"]
    for split in ("train", "val", "test"):
        mine, theirs = from_shards.splits[split], direct.splits[split]
        assert isinstance(mine.source, PackedSplit) and len(mine) == len(theirs) > 0
        assert sorted(mine.ids) == sorted(theirs.ids)  # the same hold-out as training from the folder
        where = [theirs.ids.index(path) for path in mine.ids]  # train is written shuffled
        assert (where == sorted(where)) == (split != "train")
        assert torch.equal(mine.labels, theirs.labels[where])
        assert torch.equal(mine.images, theirs.images[where])  # every pixel, read back by row
    assert len(list((packed["out"] / "train").glob("chunk-*.bin"))) >= 4  # --shard-size 0.01 MB: small shards
    as_url = prepare_data(DataConfig(source=f"file://{packed['out']}"), SEED)  # a file:// URL names it too
    assert as_url.splits["test"].ids == from_shards.splits["test"].ids


def test_pack_reports_and_skips_the_corrupt_file(packed, cli, tmp_path) -> None:
    manifest = read_manifest(packed["out"])
    assert [Path(s["path"]).name for s in manifest["skipped"]] == ["broken.png"]
    assert sum(s["count"] for s in manifest["splits"].values()) == 90  # the 90 good images, all kept
    skipped = open_packed(str(packed["out"]), None, None)[2]
    assert [Path(s.path).name for s in skipped] == ["broken.png"]  # a run from the shards lists it too
    code, out, _ = cli("data", "pack", packed["folder"], tmp_path / "again")
    assert code == 0 and "1 unreadable file skipped" in out
    code, out, _ = cli("data", "inspect", packed["out"])
    assert code == 0 and "train: " in out and "20 px, 3 channels" in out


def _rank_rows(split: PackedSplit, shard: tuple[int, int], epoch: int) -> tuple[list[int], int]:
    """Rows a rank's training loader yields in one epoch (images matched back to rows), and its batches."""
    every = split.read(np.arange(len(split)))
    row_of = {image.tobytes(): row for row, image in enumerate(every)}
    assert len(row_of) == len(split)  # images are unique: a batch image names its row
    loader = split.train_loader(batch_size=8, seed=1, shard=shard, epoch_of=lambda: epoch)
    rows, batches, mixed = [], 0, 0
    for images, labels in loader:
        mixed += len(set(labels.tolist())) > 1
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 20, 20) and labels.dtype == torch.long
        rows += [row_of[image.numpy().tobytes()] for image in images]
        batches += 1
    assert batches == len(loader)
    assert mixed >= batches / 2, mixed  # the folder lists class by class: packed shuffled, batches mix classes
    return rows, batches


def test_two_ranks_read_disjoint_equal_parts_that_cover_the_split(packed) -> None:
    split = prepare_data(DataConfig(source=str(packed["out"])), SEED).splits["train"].source
    seen: set[int] = set()
    for epoch in range(3):
        (a, batches_a), (b, batches_b) = (_rank_rows(split, (rank, 2), epoch) for rank in (0, 1))
        assert not set(a) & set(b) and len(a) == len(set(a))
        assert len(a) == len(b) and batches_a == batches_b  # no rank waits for another at the end
        assert len(a) + len(b) > len(split) - 2 * 8  # litdata evens the ranks by dropping < a batch each
        seen |= set(a) | set(b)
    assert seen == set(range(len(split)))  # the shuffle differs per epoch: nothing is left out for good
    alone, _ = _rank_rows(split, (0, 1), 0)
    assert sorted(alone) == list(range(len(split)))  # one process: every image every epoch
    assert alone != sorted(alone) and alone != _rank_rows(split, (0, 1), 1)[0]  # shuffled, per epoch


def test_a_resumed_run_shuffles_the_next_epoch_as_an_uninterrupted_one(packed) -> None:
    split = prepare_data(DataConfig(source=str(packed["out"])), SEED).splits["train"].source
    running = split.train_loader(batch_size=8, seed=1, shard=(0, 1))
    epochs = [[labels.tolist() for _, labels in running] for _ in range(3)]
    assert epochs[2] != epochs[1]
    # a resumed run: a new loader, the Trainer at epoch 2, the checkpoint's loader state handed back
    resumed = split.train_loader(batch_size=8, seed=1, shard=(0, 1), epoch_of=lambda: 2)
    resumed.load_state_dict(running.state_dict())
    assert [labels.tolist() for _, labels in resumed] == epochs[2]


def test_train_from_shards_learns(packed, cli, one_torch_thread) -> None:
    runs = packed["root"] / "runs"
    code, _, err = cli(
        "train",
        packed["out"],
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--lr",
        "0.003",
        "--seed",
        "1",
        "--runs-dir",
        runs,
        "--name",
        "packed",
    )
    assert code == 0, err
    run = runs / "packed"
    meta = read_json(run / "run.json")
    assert meta["status"] == "completed"
    assert meta["data"]["splits"]["train"]["count"] == read_manifest(packed["out"])["splits"]["train"]["count"]
    history = (run / "metrics.csv").read_text().splitlines()
    assert len(history) >= 4  # a header and one row per epoch
    test = read_json(run / "metrics.json")["test"]
    assert test["accuracy"] > 0.6  # three classes: chance is 1/3
    assert (run / "report.html").is_file() and (run / "confusion_matrix.png").is_file()
    assert "broken.png" in (run / "skipped_files.csv").read_text()
    code, _, err = cli("evaluate", run, "--data", packed["out"])
    assert code == 0, err  # scores the packed test split, read from its shards: the run's own test numbers
    evaluated = read_json(run / "eval" / "packed" / "metrics.json")["test"]
    assert (evaluated["num_samples"], evaluated["loss"]) == pytest.approx((test["num_samples"], test["loss"]))


def _copy(packed, tmp_path) -> Path:
    return Path(shutil.copytree(packed["out"], tmp_path / "copy"))


def test_a_packed_folder_without_its_manifest_is_named(packed, cli, tmp_path) -> None:
    copy = _copy(packed, tmp_path)
    (copy / MANIFEST).unlink()
    code, _, err = cli("train", copy, "--epochs", "1")
    assert code == 2 and MANIFEST in err and "missing" in err and len(err.strip().splitlines()) == 1


def test_a_corrupt_manifest_or_shard_is_named(packed, tmp_path) -> None:
    copy = _copy(packed, tmp_path)
    shard = max((copy / "val").glob("chunk-*.bin"))
    shard.write_bytes(shard.read_bytes()[:10])
    with pytest.raises(CnnlabError, match=f"shard '{shard}' is truncated"):
        prepare_data(DataConfig(source=str(copy)), SEED)
    shard.unlink()
    with pytest.raises(CnnlabError, match=f"shard '{shard}' is missing"):
        prepare_data(DataConfig(source=str(copy)), SEED)
    (copy / MANIFEST).write_text("{not json")
    with pytest.raises(CnnlabError, match="unreadable"):
        read_manifest(copy)


def test_pack_at_a_models_input_size_and_channels(packed, cli, tmp_path) -> None:
    """--model packs at what that model trains on (a pretrained Lite0: 224 px RGB, from gray shapes)."""
    code, out, _ = cli(
        "data", "pack", packed["folder"], tmp_path / "lite0", "--model", "efficientnet_lite0", "--pretrained"
    )
    assert code == 0 and "train with: cnnlab train" in out and "--model efficientnet_lite0 --pretrained" in out
    manifest = read_manifest(tmp_path / "lite0")
    assert (manifest["image_size"], manifest["channels"]) == (224, 3)
    splits, _, _ = open_packed(str(tmp_path / "lite0"), 3, 224)  # what that run asks for: no mismatch
    assert splits["train"].images.shape[1:] == (3, 224, 224)


def test_pack_refuses_bad_arguments(packed, cli, tmp_path) -> None:
    code, _, err = cli("data", "pack", tmp_path / "nowhere", tmp_path / "out")
    assert code == 2 and "nowhere" in err and "not found" in err
    code, _, err = cli("data", "pack", packed["folder"], packed["out"])  # not empty
    assert code == 2 and str(packed["out"]) in err
    code, _, err = cli("data", "pack", packed["out"], tmp_path / "twice")
    assert code == 2 and "already packed" in err
    code, _, err = cli("train", packed["out"], "--channels", "1", "--epochs", "1")
    assert code == 2 and "--channels 1" in err and "pack again" in err
    code, _, err = cli("train", packed["out"], "--crop-mode", "squash", "--epochs", "1")  # shards hold centre crops
    assert code == 2 and "packed with --crop-mode center" in err and "pack again with --crop-mode squash" in err
    code, _, err = cli("train", packed["out"], "--sampler", "balanced", "--epochs", "1")
    assert code == 2 and "balanced" in err
