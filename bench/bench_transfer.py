"""Two-stage transfer learning with EfficientNet-Lite0 (built-in ImageNet weights) on a CIFAR-10 subset.

    PYTHONPATH=src python bench/bench_transfer.py                   # 2,000 train / 500 val / 1,000 test, 96 and 160 px
    PYTHONPATH=src python bench/bench_transfer.py --sizes 96 --variants

Per image size, in one run: stage 1 (frozen backbone, the lesson's head GAP-Dense256-ReLU-
Dropout0.5-Dense10, Adam 1e-3) trained on the feature cache, channels_last, and stage 2 (last 10 layers
unfrozen, Adam 1e-5, BatchNorm kept in inference mode) on images; test accuracy and wall time
of each; and one stage-1 epoch with the cache vs without it (images through the frozen
backbone each epoch), both as train + validation passes, timed in interleaved rounds (median).
The head-only work runs on one thread (tiny matrices; see FeatureHeadModule), the rest on
``--threads``. ``--variants`` adds stage 2 with BatchNorm in training mode at the first size,
from the same stage-1 model.

Plain torch loops with cnnlab's components (create_model, plan_stages/apply_stage, param
groups, cache_features), the lesson's callbacks re-done by hand: ReduceLROnPlateau (0.5, 3) and
early stopping on validation loss (patience 5) with the best weights restored. No augmentation.
Images: per class the first N files (sorted names) of CIFAR-10 train (train, then val) and
test, resized from 32 px as the data layer does. Writes the table to bench/out/transfer.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import os
import platform
import statistics
import tarfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cnnlab.config import RunConfig, TrainConfig, TransferConfig
from cnnlab.data.loaders import EpochBatches
from cnnlab.data.normalize import Normalize
from cnnlab.data.prepare import convert_images
from cnnlab.data.types import ImageSet, PreparedData
from cnnlab.machine import cpu_name
from cnnlab.models import create_model, model_input
from cnnlab.models.freeze import set_frozen_bn_eval
from cnnlab.models.heads import head_forward
from cnnlab.training.feature_cache import cache_features
from cnnlab.training.stage_plan import Stage, apply_stage, plan_stages, stage_param_groups

HERE = Path(__file__).resolve().parent
DATASETS = Path.home() / ".cache" / "cnnlab" / "datasets"
SHARED = HERE.parent.parent / "shared" / "data"
BATCH = 128


def load_cifar(train: int, val: int, test: int) -> PreparedData:
    """The subset at 32 px (unpacks ../shared/data/cifar10.tar.gz to the cache once)."""
    root = DATASETS / "cifar10"
    if not (root / "train").is_dir():
        DATASETS.mkdir(parents=True, exist_ok=True)
        with tarfile.open(SHARED / "cifar10.tar.gz") as tar:
            tar.extractall(DATASETS, filter="data")
    classes = sorted(p.name for p in (root / "train").iterdir())

    def read(split: str, start: int, count: int) -> ImageSet:
        images, labels, ids = [], [], []
        for label, name in enumerate(classes):
            for path in sorted((root / split / name).iterdir())[start : start + count]:
                images.append(np.asarray(Image.open(path).convert("RGB")))
                labels.append(label)
                ids.append(str(path))
        tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        return ImageSet(tensor, torch.tensor(labels), ids)

    per = {k: v // len(classes) for k, v in {"train": train, "val": val, "test": test}.items()}
    splits = {
        "train": read("train", 0, per["train"]),
        "val": read("train", per["train"], per["val"]),
        "test": read("test", 0, per["test"]),
    }
    return PreparedData(splits, classes, "cifar10-subset")


def resized(data: PreparedData, size: int) -> PreparedData:
    splits = {k: ImageSet(convert_images(v.images, 3, size), v.labels, v.ids) for k, v in data.splits.items()}
    return PreparedData(splits, data.class_names, data.source)


class Fit:
    """The lesson's loop: Adam on the stage's groups, plateau LR, early stopping, best restored."""

    def __init__(self, model: torch.nn.Module, stage: Stage, step, evaluate, n_train: int) -> None:
        self.model, self.stage, self.step, self.evaluate, self.n_train = model, stage, step, evaluate, n_train

    def run(self, bn_eval_all: bool) -> tuple[float, int, float]:
        """Returns (seconds, epochs run, mean seconds per train + validation pass)."""
        optimizer = torch.optim.Adam(stage_param_groups(self.model, self.stage))
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=3, min_lr=1e-7)
        sampler = EpochBatches(torch.zeros(self.n_train, dtype=torch.long), BATCH, shuffle=True, seed=42)
        best, best_state, bad, started, epochs, busy = float("inf"), None, 0, time.perf_counter(), 0, 0.0
        for epoch in range(self.stage.epochs):
            epoch_started = time.perf_counter()
            self.model.train()
            set_frozen_bn_eval(self.model, include_trainable=bn_eval_all)
            sampler.set_epoch(epoch)
            for positions in sampler:
                optimizer.zero_grad(set_to_none=True)
                self.step(torch.as_tensor(positions)).backward()
                optimizer.step()
            val_loss, _ = self.evaluate("val")
            busy += time.perf_counter() - epoch_started  # train + validation, without bookkeeping
            plateau.step(val_loss)
            epochs += 1
            if val_loss < best:
                best, bad = val_loss, 0
                best_state = {k: v.clone() for k, v in self.model.state_dict().items()}
            else:
                bad += 1
                if bad >= 5:
                    break
        self.model.load_state_dict(best_state)
        seconds = time.perf_counter() - started
        return seconds, epochs, busy / epochs


@contextlib.contextmanager
def threads(count: int) -> Iterator[None]:
    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def image_eval(model: torch.nn.Module, data: PreparedData, norm: Normalize):
    def evaluate(split: str) -> tuple[float, float]:
        model.eval()
        images, labels = data.splits[split].images, data.splits[split].labels
        with torch.inference_mode():
            logits = torch.cat(
                [model(nhwc(norm(Normalize.to_unit(images[i : i + 256])))) for i in range(0, len(images), 256)]
            )
        return float(F.cross_entropy(logits, labels)), float((logits.argmax(1) == labels).float().mean())

    return evaluate


def image_step(model: torch.nn.Module, data: PreparedData, norm: Normalize):
    images, labels = data.splits["train"].images, data.splits["train"].labels
    return lambda idx: F.cross_entropy(model(nhwc(norm(Normalize.to_unit(images[idx])))), labels[idx])


def run_size(base: PreparedData, size: int, args: argparse.Namespace) -> list[dict]:
    data = resized(base, size)
    wanted = model_input("efficientnet_lite0", True)
    norm = Normalize(wanted.mean, wanted.std)
    config = RunConfig(
        train=TrainConfig(epochs=15),
        transfer=TransferConfig(frozen_epochs=args.frozen_epochs, finetune_epochs=args.finetune_epochs),
    )
    stage1, stage2 = plan_stages(config, pretrained=True)
    torch.manual_seed(0)
    model = create_model(
        "efficientnet_lite0",
        pretrained=True,
        num_classes=10,
        in_chans=3,
        image_size=(size, size),
        head="lesson",
        dropout=0.5,
    )
    model = model.to(memory_format=torch.channels_last)  # ~2x faster depthwise convs on CPU
    apply_stage(model, stage1, config.transfer)
    n = len(data.splits["train"])
    started = time.perf_counter()
    feats = cache_features(model, data, norm, batch_size=256)
    extract = time.perf_counter() - started

    def feat_eval(net: torch.nn.Module):
        def evaluate(split: str) -> tuple[float, float]:
            net.eval()
            with torch.inference_mode():
                logits = head_forward(net, feats[split].features)
            labels = feats[split].labels
            return float(F.cross_entropy(logits, labels)), float((logits.argmax(1) == labels).float().mean())

        return evaluate

    def feat_step(net: torch.nn.Module):
        return lambda idx: F.cross_entropy(head_forward(net, feats["train"].features[idx]), feats["train"].labels[idx])

    def epoch_seconds(net: torch.nn.Module, cached: bool) -> float:
        """One stage-1 epoch (train + validation pass) on a copy, with or without the cache."""
        net = copy.deepcopy(net)
        one = dataclasses.replace(stage1, epochs=1)
        if cached:
            with threads(1):
                return Fit(net, one, feat_step(net), feat_eval(net), n).run(False)[2]
        return Fit(net, one, image_step(net, data, norm), image_eval(net, data, norm), n).run(False)[2]

    with threads(1):  # tiny matrices: one thread (as FeatureHeadModule does on the CPU)
        s1_seconds, s1_epochs, _ = Fit(model, stage1, feat_step(model), feat_eval(model), n).run(False)
    acc1 = feat_eval(model)("test")[1]
    # Interleaved rounds, so load from other users of the machine falls on both alike; median.
    rounds = [
        (epoch_seconds(model, False), *[epoch_seconds(model, True) for _ in range(3)]) for _ in range(args.rounds)
    ]
    uncached_epoch = statistics.median(r[0] for r in rounds)
    cached_epoch = statistics.median(t for r in rounds for t in r[1:])

    rows = []
    variants = [("lesson: 10 layers, lr 1e-5, BN eval", {}, True)]
    if args.variants and size == args.sizes[0]:
        variants += [("10 layers, lr 1e-5, BN train", {}, False)]
    stage1_state = copy.deepcopy(model.state_dict())
    for label, change, bn_eval in variants:
        model.load_state_dict(stage1_state)
        transfer = dataclasses.replace(config.transfer, finetune_blocks=change.get("blocks"))
        stage = dataclasses.replace(stage2, lr=change.get("lr", stage2.lr), bn_eval=bn_eval)
        trainable, _ = apply_stage(model, stage, transfer)
        evaluate = image_eval(model, data, norm)
        s2_seconds, s2_epochs, _ = Fit(model, stage, image_step(model, data, norm), evaluate, n).run(bn_eval)
        acc2 = evaluate("test")[1]
        rows.append(
            {
                "size": size,
                "stage2": label,
                "trainable2": trainable,
                "acc1": acc1,
                "s1": extract + s1_seconds,
                "s1_epochs": s1_epochs,
                "extract": extract,
                "cached_epoch": cached_epoch,
                "uncached_epoch": uncached_epoch,
                "acc2": acc2,
                "s2": s2_seconds,
                "s2_epochs": s2_epochs,
            }
        )
        print(
            f"{size}px {label}: stage 1 {acc1:.4f} ({extract + s1_seconds:.0f}s), stage 2 {acc2:.4f} "
            f"({s2_seconds:.0f}s, {s2_epochs} epochs)",
            flush=True,
        )
    return rows


def table(rows: list[dict]) -> str:
    head = (
        "| px | stage 2 | stage-1 test acc | stage-1 time (extract + epochs) | stage-2 test acc | gain (points) "
        "| stage-2 time (epochs) | stage-1 epoch: no cache | cached | speed-up | acc per minute (both stages) |"
    )
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for r in rows:
        total_min = (r["s1"] + r["s2"]) / 60
        lines.append(
            f"| {r['size']} | {r['stage2']} | {100 * r['acc1']:.2f}% | {r['s1']:.1f} s ({r['extract']:.1f} + "
            f"{r['s1_epochs']} ep) | {100 * r['acc2']:.2f}% | {100 * (r['acc2'] - r['acc1']):+.2f} | {r['s2']:.1f} s "
            f"({r['s2_epochs']} ep) | {r['uncached_epoch']:.2f} s | {1000 * r['cached_epoch']:.1f} ms | "
            f"{r['uncached_epoch'] / r['cached_epoch']:.0f}x | {100 * r['acc2'] / total_min:.1f} %/min |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 160])
    parser.add_argument("--frozen-epochs", type=int, default=15)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds of one stage-1 epoch")
    parser.add_argument("--variants", action="store_true", help="stage-2 alternatives at the first size")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = (
        f"{cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__} "
        f"({args.threads} threads), Python {platform.python_version()}, load average at start "
        f"{os.getloadavg()[0]:.1f} (shared machine)"
    )
    print(machine, flush=True)
    base = load_cifar(args.train, args.val, args.test)
    print(f"CIFAR-10 subset: {args.train} train / {args.val} val / {args.test} test images", flush=True)
    rows = [row for size in args.sizes for row in run_size(base, size, args)]
    text = table(rows)
    print(text)
    out = HERE / "out" / "transfer.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = (
        "PYTHONPATH=src python bench/bench_transfer.py "
        + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if k != "variants"
        )
        + (" --variants" if args.variants else "")
    )
    out.write_text(
        f"# Transfer learning: EfficientNet-Lite0 on a CIFAR-10 subset\n\n`{command}`\n\n{machine}\n\n"
        f"{args.train} train / {args.val} val / {args.test} test images (balanced, first files per class), "
        f"lesson head, batch {BATCH}, no augmentation; stage 1 up to {args.frozen_epochs} epochs on the "
        f"feature cache, stage 2 up to {args.finetune_epochs} epochs on images; early stopping (patience 5) "
        "and ReduceLROnPlateau on validation loss, best weights restored. Stage-1 epoch times are one "
        "train + validation pass, median of interleaved rounds; 'speed-up' excludes the one-time "
        "extraction (counted in stage-1 time). Head-only work on 1 thread, the rest on "
        f"{args.threads}.\n\n"
        f"{text}\n"
    )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
