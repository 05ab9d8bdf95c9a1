"""Stage-2 (fine-tuning) step time of EfficientNet-Lite0 on a CPU: NCHW against channels_last.

    PYTHONPATH=src python bench/bench_finetune_step.py --threads 1      # ~5 min

The stage as cnnlab runs it: the last 10 layers and the head trainable, BatchNorm in inference
mode, Adam; one forward + backward + step on random images per timing (their content does not
change the time). Both layouts are built first and timed round-robin, so load changes hit both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import spread, write_page  # noqa: E402
from cnnlab.config import TrainConfig  # noqa: E402
from cnnlab.models import create_model  # noqa: E402
from cnnlab.models.freeze import freeze_backbone, set_frozen_bn_eval, unfreeze_last_layers  # noqa: E402
from cnnlab.training.optim import apply_speedups  # noqa: E402

CASES = [(224, 32), (224, 128), (160, 128)]  # (px, batch): cnnlab's default batch is 128


def finetune_step(side: int, batch: int, channels_last: bool):
    model = create_model("efficientnet_lite0", num_classes=2, in_chans=3, image_size=(side, side))
    freeze_backbone(model)
    unfreeze_last_layers(model, 10)
    model.train()
    set_frozen_bn_eval(model, include_trainable=True)
    apply_speedups(model, TrainConfig(channels_last=channels_last))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    x, y = torch.rand(batch, 3, side, side), torch.randint(0, 2, (batch,))

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    return step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args(argv)
    command = "PYTHONPATH=src python bench/bench_finetune_step.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = ["| px | batch | NCHW ms per image | channels_last ms per image | speed-up |", "|---|---|---|---|---|"]
    for side, batch in CASES:
        steps = {layout: finetune_step(side, batch, layout) for layout in (False, True)}
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for layout, step in steps.items():
                began = time.perf_counter()
                step()
                times[layout].append((time.perf_counter() - began) / batch * 1e3)
        nchw, nhwc = (statistics.median(times[layout]) for layout in (False, True))
        rows.append(
            f"| {side} | {batch} | {spread(times[False], '{:.1f}')} | {spread(times[True], '{:.1f}')} | "
            f"{nchw / nhwc:.2f}x |"
        )
        print(rows[-1], flush=True)
    write_page(
        "finetune_step",
        "Fine-tuning step on a CPU: channels_last",
        command,
        "EfficientNet-Lite0, last 10 layers + head trainable, BatchNorm in inference mode, Adam; time per "
        "image of one training step, median (min-max) of interleaved rounds. cnnlab trains in channels_last by "
        "default (`--no-channels-last` turns it off).",
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
