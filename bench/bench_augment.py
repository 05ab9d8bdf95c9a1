"""Batched on-device augmentation vs the per-image torchvision way, side by side in one run.

Run: ``PYTHONPATH=src python bench/bench_augment.py [--repeats 7] [--threads 1 2]``. Prints the
machine and, per torch thread count, a table of per-batch time (median and min over interleaved
rounds), images/s and speed-up over the per-image PIL loop. The per-image baselines do the same
ops as the ``lesson`` preset (rotation 20, shifts 0.2, zoom 0.2, hflip; bilinear) with
``transforms.v2.RandomAffine`` + ``RandomHorizontalFlip``; RandomAffine can only fill with a
constant, so it fills with 0 where BatchAugment repeats the edge (Keras' 'nearest'), which costs
BatchAugment nothing extra.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from PIL import Image
from torchvision.transforms import v2

from cnnlab.augment import BatchAugment
from cnnlab.config import resolve_augment
from cnnlab.machine import cpu_name

BATCH = 256
SHAPES = {"32x32 RGB": (3, 32, 32), "28x28 gray": (1, 28, 28)}


def interleaved_seconds(fns: list[Callable[[], object]], repeats: int) -> list[tuple[float, float]]:
    """(median, min) wall time per function, timed in rounds of one call each after a warm-up.

    Rounds interleave the methods so that load from other users of a shared machine falls on all
    of them alike; the median is the typical cost, the min the cost without interference.
    """
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, acc in zip(fns, times):
            start = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - start)
    return [(statistics.median(t), min(t)) for t in times]


def per_image_tensor(x8: torch.Tensor, tf: v2.Transform) -> Callable[[], torch.Tensor]:
    """The Dataset-style loop on uint8 tensors: transform each image, then stack (as a collate would)."""
    return lambda: torch.stack([v2.functional.to_dtype(tf(img), torch.float32, scale=True) for img in x8])


def per_image_pil(x8: torch.Tensor, tf: v2.Transform) -> Callable[[], torch.Tensor]:
    """The classic PIL loop: PIL image -> transform -> tensor, per image."""
    mode = "L" if x8.shape[1] == 1 else "RGB"
    pils = [Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy(), mode) for img in x8]
    to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    return lambda: torch.stack([to_tensor(tf(img)) for img in pils])


def batched(x8: torch.Tensor, preset: str, policy_chunk: int = 16) -> Callable[[], torch.Tensor]:
    """BatchAugment as the training step runs it: uint8 -> float, then augment the whole batch."""
    aug = BatchAugment(resolve_augment(preset), policy_chunk=policy_chunk).train()
    return lambda: aug(x8.float().div_(255))


def table(repeats: int) -> None:
    """Time every method on both data shapes at the current torch thread count and print the rows."""
    affine = v2.Compose(
        [
            v2.RandomAffine(
                degrees=20, translate=(0.2, 0.2), scale=(0.8, 1.2), interpolation=v2.InterpolationMode.BILINEAR
            ),
            v2.RandomHorizontalFlip(),
        ]
    )
    print(f"\ntorch threads: {torch.get_num_threads()}")
    print(f"{'data':<11} {'method':<44} {'median ms':>9} {'min ms':>7} {'images/s':>9} {'vs PIL':>7}")
    for data, shape in SHAPES.items():
        x8 = torch.randint(0, 256, (BATCH, *shape), dtype=torch.uint8)
        rows = [
            ("per-image v2 RandomAffine+flip, tensor loop", per_image_tensor(x8, affine)),
            ("per-image v2 RandomAffine+flip, PIL loop", per_image_pil(x8, affine)),
            ("BatchAugment lesson (one grid_sample)", batched(x8, "lesson")),
            ("BatchAugment production (+shear, bright.)", batched(x8, "production")),
            ("BatchAugment strong, policy chunk 16", batched(x8, "strong", 16)),
            ("BatchAugment strong, policy chunk 1", batched(x8, "strong", 1)),
        ]
        results = interleaved_seconds([fn for _, fn in rows], repeats)
        base = results[1][0]  # the PIL loop: the faster per-image baseline
        for (name, _), (med, low) in zip(rows, results):
            print(f"{data:<11} {name:<44} {med * 1e3:>9.2f} {low * 1e3:>7.2f} {BATCH / med:>9.0f} {base / med:>6.1f}x")


def main() -> None:
    """Parse the flags, print the machine, then one table per torch thread count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (median and min are shown)")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="torch intra-op thread counts to run (default: 1 and torch's default)",
    )
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
    print(
        f"CPU: {cpu_name()} | cores: {os.cpu_count()} | torch default threads: {default_threads} | "
        f"torch {torch.__version__} | batch {BATCH} | {args.repeats} interleaved rounds"
    )
    # 1 thread too: on a shared machine a descheduled second thread stalls every parallel op.
    for threads in args.threads or sorted({1, default_threads}):
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        table(args.repeats)


if __name__ == "__main__":
    main()
