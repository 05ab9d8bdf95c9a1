"""Which rule should read the learning-rate finder's curve? Train at each rule's pick and at the default.

For each task: one ``cnnlab lr-find`` (Lightning's range test), the rate each rule of
``cnnlab.training.lr_finder.RULES`` reads from that one curve, then ``cnnlab train`` at each of
those rates and at the default ``--lr``, same seed and split; validation and test accuracy.
Tasks: the lesson's CNN on scikit-learn's digits (every layer trains), and EfficientNet-Lite0's
stage 1 on dtd10 (the head on cached features, ``--stages frozen``, whose rate ``--lr`` sets).

    python bench/bench_lr_find.py            # writes bench/out/lr_find.md
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cnnlab  # noqa: E402
from common import dataset, write_page  # noqa: E402
from cnnlab.training.lr_finder import DEFAULT_RULE, RULES  # noqa: E402

TASKS = {
    "digits, simple_cnn from scratch": ("digits", {"model": "simple_cnn", "epochs": 15}),
    "dtd10, efficientnet_lite0 stage 1 (head on cached features)": (
        str(dataset("dtd10")),
        {"model": "efficientnet_lite0", "pretrained": True, "stages": "frozen"},
    ),
}


def best_val(run: cnnlab.Run) -> float:
    return float(run.history["val_acc"].max())


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task, (data, options) in TASKS.items():
            found = cnnlab.lr_find(data, out=Path(tmp) / "find" / task[:5], **options)
            rates = {f"rule '{rule}'": lr for rule, lr in found.picks.items()}
            rates["default --lr"] = float(cnnlab.configure(data, **options).train.lr)
            for name, lr in rates.items():
                began = time.perf_counter()
                run = cnnlab.train(data, lr=lr, runs_dir=str(Path(tmp) / "runs"), **options)
                rows.append(
                    f"| {task} | {name} | {lr:.3g} | {best_val(run):.2%} | {run.metrics['accuracy']:.2%} | "
                    f"{time.perf_counter() - began:.0f} s |"
                )
    rules = "; ".join(f"'{name}': {text}" for name, text in RULES.items())
    write_page(
        "lr_find",
        "Learning-rate finder: the rules' picks, trained",
        "python bench/bench_lr_find.py",
        f"One range test per task (100 rates from 1e-6 to 1); the rules: {rules}. The default rule is "
        f"'{DEFAULT_RULE}'. Accuracy: the best validation epoch, and the test split at the kept weights.",
        ["| task | rate from | lr | best val acc | test acc | time |", "|---|---|---|---|---|---|", *rows],
    )


if __name__ == "__main__":
    main()
