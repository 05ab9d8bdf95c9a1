"""Inference batch size on a CPU: cnnlab's pixel-budget batch against a fixed batch of 512.

    PYTHONPATH=src python bench/bench_eval_batch.py --threads 1 --rounds 2     # ~8 min

Scores random images (the speed does not depend on their content) with each model in eval mode
under ``torch.inference_mode``, as evaluation, prediction and feature extraction do. For each
(model, image size) the two batch sizes run interleaved, ``--rounds`` times, over the same
number of images; the figure is the median images/s and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import write_page  # noqa: E402
from cnnlab.data.loaders import EVAL_BATCH_SIZE, eval_batch_size  # noqa: E402
from cnnlab.models import create_model  # noqa: E402

CASES = [
    ("efficientnet_lite0", 3, 224),
    ("efficientnet_lite0", 3, 160),
    ("efficientnet_lite0", 3, 96),
    ("fast_cifar", 3, 32),
    ("simple_cnn", 1, 28),
]


def images_per_second(model: torch.nn.Module, images: torch.Tensor, batch: int) -> float:
    with torch.inference_mode():
        model(images[:batch])  # warm-up: allocator and kernel selection
        started = time.perf_counter()
        for start in range(0, len(images), batch):
            model(images[start : start + batch])
    return len(images) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    command = "PYTHONPATH=src python bench/bench_eval_batch.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = ["| model | px | cnnlab batch | img/s | batch 512 img/s | speed-up |", "|---|---|---|---|---|---|"]
    for name, chans, side in CASES:
        model = create_model(name, num_classes=10, in_chans=chans, image_size=(side, side)).eval()
        chosen = eval_batch_size((chans, side, side))
        count = max(EVAL_BATCH_SIZE, min(8192, 20_000_000 // (side * side)))  # under a minute per case
        images = torch.randn(count, chans, side, side)
        timings: dict[int, list[float]] = {chosen: [], EVAL_BATCH_SIZE: []}
        for _ in range(args.rounds):
            for batch in timings:
                timings[batch].append(images_per_second(model, images, batch))
        ours, fixed = (statistics.median(timings[b]) for b in (chosen, EVAL_BATCH_SIZE))
        rows.append(f"| {name} | {side} | {chosen} | {ours:.0f} | {fixed:.0f} | {ours / fixed:.2f}x |")
        print(rows[-1], flush=True)
    write_page(
        "eval_batch",
        "Inference batch size on a CPU",
        command,
        "Evaluation, prediction and feature extraction batch by a pixel budget on a CPU (about 400k pixels, "
        "`cnnlab.data.loaders.eval_batch_size`) instead of a fixed 512 images: large batches of large "
        "images outgrow the caches. Median of interleaved rounds over the same images.",
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
