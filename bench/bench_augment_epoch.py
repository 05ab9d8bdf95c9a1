"""Cost of augmentation per training epoch: ``--augment production`` vs ``--augment none``.

CIFAR-10 (the 32-px JPEG folder from ../shared/data), the lesson's simple_cnn, batch 128, one epoch
each, through cnnlab's real training path (ImageDataModule, ClassifierModule, Lightning Trainer).
Arms are interleaved (none, production, none, ...) so the shared machine's load hits both alike.

    PYTHONPATH=src python bench/bench_augment_epoch.py [--repeats 3] [--train 20000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import OUT, dataset, load_data, machine

from cnnlab.augment.batch import build_batch_augment
from cnnlab.config import RunConfig, merge_config, resolve_augment
from cnnlab.data.loaders import ImageDataModule
from cnnlab.data.normalize import Normalize
from cnnlab.models import create_model
from cnnlab.training.module import ClassifierModule
from cnnlab.training.run_dir import RunFiles
from cnnlab.training.trainer import build_trainer, quiet_lightning


def epoch_seconds(data, config: RunConfig, preset: str, folder: Path) -> float:
    """Wall time of one training epoch (plus 1,000 validation images) with the given preset."""
    model = create_model("simple_cnn", num_classes=data.num_classes, in_chans=data.channels, image_size=data.image_size)
    module = ClassifierModule(
        model,
        data.num_classes,
        Normalize([0.0], [1.0]),
        config.train,
        augment=build_batch_augment(resolve_augment(preset)),
    )
    files = RunFiles(folder / preset)
    datamodule = ImageDataModule(data, config.data.batch_size, seed=0)
    with quiet_lightning():
        trainer, _ = build_trainer(replace(config.train, epochs=1), files, 1, "train")
        started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train", type=int, default=20000, help="training images used (stratified)")
    args = parser.parse_args()
    source = dataset("cifar10")
    config = merge_config(RunConfig(), {"data": {"source": str(source), "val_split": "1000"}})
    data = load_data(config)
    train = data.splits["train"]
    if len(train) > args.train:
        data.splits["train"] = train.subset(list(range(0, len(train), len(train) // args.train))[: args.train])
    times: dict[str, list[float]] = {"none": [], "production": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for preset in times:
                times[preset].append(epoch_seconds(data, config, preset, Path(tmp)))
                print(f"{preset}: {times[preset][-1]:.1f} s", flush=True)
    ratios = [p / n for p, n in zip(times["production"], times["none"])]
    lines = [
        "# Augmentation cost per epoch (CIFAR-10, simple_cnn)",
        "",
        f"Command: `PYTHONPATH=src python bench/bench_augment_epoch.py --repeats {args.repeats} --train {args.train}`  ",
        f"Machine: {machine()}  ",
        f"{len(data.splits['train'])} training images, 32 px RGB, batch 128, one epoch per run, arms interleaved.",
        "",
        "| augmentation | epoch time, median (min-max) s |",
        "|---|---|",
    ]
    for preset, values in times.items():
        lines.append(f"| {preset} | {statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f}) |")
    lines += [
        "",
        f"**production / none: {statistics.median(ratios):.2f}x** (per pair: "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + "; goal: under 1.3x)",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "augment_epoch.md").write_text(text)


if __name__ == "__main__":
    main()
