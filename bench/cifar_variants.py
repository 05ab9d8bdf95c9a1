"""Variants of ``--recipe fast-cifar``: validation accuracy at a fixed number of epochs, and speed.

On a shared machine a time budget measures the load as much as the recipe; accuracy after a
fixed number of epochs does not depend on the load (seeded), and each variant's training speed
is measured apart, in a short interleaved timing. Accuracy in T minutes = accuracy after the
epochs that fit in T minus the command's fixed costs. Validation split only: test is for the end.

    PYTHONPATH=src python bench/cifar_variants.py --epochs 5 base ema bn-shift   # accuracy
    PYTHONPATH=src python bench/cifar_variants.py --speed                        # images/s, ~2 min

Results accumulate in bench/out/cifar_variants.json (one row per run); bench_cifar.py renders them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import OUT, accuracy, load_data, machine, recipe_config, speed_table, train_once  # noqa: E402

from cnnlab.models.fast_cnn import FastCifarNet  # noqa: E402

RESULTS = OUT / "cifar_variants.json"
HALF, THREE_QUARTER, FULL = (32, 128, 128), (48, 192, 192), (64, 256, 256)

# name -> what changes from the recipe: "train"/"data" config updates, "net" FastCifarNet keywords.
# Each is one lever, measured alone against "base"; "airbench" is its levers together.
VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "ema": {"train": {"ema": 0.99}},
    "bn-shift": {"net": {"shift_lr": 64.0}},
    "dirac": {"net": {"dirac": True}},
    "wd-5x": {"train": {"weight_decay": 2.5e-3}},
    "airbench": {"net": {"shift_lr": 64.0, "dirac": True}, "train": {"ema": 0.99}},
    "width-3/4": {"net": {"widths": THREE_QUARTER}},
    "width-full": {"net": {"widths": FULL}},
    "batch-512": {"data": {"batch_size": 512}, "train": {"lr": 0.4}},
    "batch-128": {"data": {"batch_size": 128}, "train": {"lr": 0.1}},
    "lr-0.4": {"train": {"lr": 0.4}},
    "fp32": {"train": {"precision": "32-true"}},
    # The recipe's augmentation before whole-pixel moves: bilinear sub-pixel shifts by up to 2 px.
    "shifts": {"augment": {"translate": 0, "width_shift": 0.0625, "height_shift": 0.0625}},
    # airbench94's levers Speed II did not try: each image mirrored on alternate epochs instead of a
    # coin each time; Lookahead (timm's, every 5 steps, alpha 0.5); its linear warm-up and decay.
    "alternate-flip": {"augment": {"flip_mode": "alternate"}},
    "lookahead": {"train": {"lookahead": 5}},
    "alternate-flip+lookahead": {"augment": {"flip_mode": "alternate"}, "train": {"lookahead": 5}},
    "linear-lr": {"train": {"scheduler": "linear"}},
}


def build_net(spec: dict[str, Any]) -> FastCifarNet:
    """The variant's network (the recipe's fast_cifar unless ``spec['net']`` says otherwise)."""
    return FastCifarNet(10, 3, (32, 32), **{"widths": HALF, **spec.get("net", {})})


def run_variant(name: str, epochs: int, seed: int, source: Path, data: Any) -> dict[str, Any]:
    """Trains one variant for ``epochs`` epochs; validation accuracy without, with flip and with flip+translate TTA."""
    spec = VARIANTS[name]
    updates = {
        "train": {"epochs": epochs, "patience": 1000, "time_budget": None, **spec.get("train", {})},
        "data": spec.get("data", {}),
        "augment": spec.get("augment", {}),
    }
    config = recipe_config("fast-cifar", source, seed, updates)
    result = train_once(config, data, model=build_net(spec))
    net, normalize = result.model, result.extra["normalize"]
    assert isinstance(net, FastCifarNet)
    scores = {}
    for tta in ("none", "flip", "flip-translate"):
        net.tta = tta
        began = time.perf_counter()
        scores[tta] = accuracy(net, normalize, data.splits["val"])
        scores[f"{tta}_s"] = time.perf_counter() - began
    return {
        "variant": name,
        "epochs": epochs,
        "seed": seed,
        "val": scores,
        "train_s": result.train_seconds,
        "images_per_s": result.extra["images_per_s"],
        "load": machine().split("load average ")[1],
    }


def speed(names: list[str], rounds: int) -> dict[str, float]:
    """Median training images/s of each variant's step (forward, backward, SGD), round-robin."""
    variants: dict[str, dict[str, Any]] = {}
    for name in names:
        spec = VARIANTS[name]
        factory: Callable[[], FastCifarNet] = lambda spec=spec: build_net(spec)  # noqa: E731
        variants[name] = {
            "model": factory,
            "channels_last": True,
            "bf16": spec.get("train", {}).get("precision") != "32-true",
            "batch": spec.get("data", {}).get("batch_size", 256),
        }
    for threads in (1, 2):
        variants[f"base, {threads} thread{'s' * (threads > 1)}"] = {
            "model": lambda: build_net({}),
            "channels_last": True,
            "bf16": True,
            "threads": threads,
        }
    rows = speed_table("fast_cifar", 3, 32, 256, rounds=rounds, variants=variants)
    print("\n".join(rows))
    out: dict[str, float] = {}
    for row in rows[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        out[cells[0]] = 1e6 / float(cells[1].split()[0])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variants", nargs="*", help=f"variants to train (default: all): {', '.join(VARIANTS)}")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", type=Path, required=True, help="the CIFAR-10 folder (train/, test/)")
    p.add_argument("--speed", action="store_true", help="only time each variant's training step")
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.speed:
        images_per_s = speed(args.variants or list(VARIANTS), args.rounds)
        save(lambda stored: stored["speed"].append({"images_per_s": images_per_s, "machine": machine()}))
    else:
        config = recipe_config("fast-cifar", args.data, 0)
        data = load_data(config)
        for name in args.variants or list(VARIANTS):
            row = run_variant(name, args.epochs, args.seed, args.data, data)
            print(json.dumps(row), flush=True)
            save(lambda stored, row=row: stored["runs"].append(row))
    return 0


def save(add: Callable[[dict[str, Any]], None]) -> None:
    """Adds a result to the stored ones, re-read first: two variant runs may share the machine."""
    stored = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": [], "speed": []}
    add(stored)
    OUT.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(stored, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
