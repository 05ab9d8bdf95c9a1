"""What ``cnnlab tune`` gains over the defaults on real photos within a budget, and what TTA adds.

Runs ``cnnlab tune dtd10 --model efficientnet_lite0 --pretrained --time-budget S`` (trial 0 is the
default transfer run), then, for this page only (the search itself never looks at the test
split but for its best trial), scores trial 0 on the test split too, and both with
``cnnlab evaluate --tta``. Copies the search's plots to docs/figures/.

    python bench/bench_tune.py [SECONDS]        # default 3600; writes bench/out/tune.md
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cnnlab  # noqa: E402
from common import dataset, write_page  # noqa: E402

FIGURES = Path(__file__).resolve().parent.parent / "docs" / "figures"
SEARCH = Path.home() / ".cache" / "cnnlab" / "bench" / "tune-dtd10"  # run folders: checkpoints, outside the repo


def draw_views(run: Path, out: Path) -> None:
    """The 10 views TTA averages for one test photo of the run, each with the model's top class."""
    import torch

    from cnnlab.figures import new_figure, save_figure, show_image
    from cnnlab.models.tta import crop_views

    trained = cnnlab.load_run(run).trained
    from cnnlab.evaluation.run_evaluation import run_data
    from cnnlab.training.run_dir import open_run

    test = run_data(open_run(run), trained).splits["test"]
    pick = min(7, len(test) - 1)
    image = test.take([pick])
    fig = new_figure(11, 4.8)
    for place, (name, view) in enumerate(crop_views(image, trained.normalize.crop)):
        with torch.inference_mode():
            logits = trained.model(trained.normalize.uncropped()(view.float() / 255))
        top = trained.class_names[int(logits.argmax())]
        show_image(fig.add_subplot(2, 5, place + 1), view[0].numpy(), f"{name}\n-> {top}")
    save_figure(fig, out, f"TTA's 10 views of a test photo ({trained.class_names[int(test.labels[pick])]})")


PARAMS = (
    "lr",
    "weight_decay",
    "augment",
    "augment_strength",
    "label_smoothing",
    "batch_size",
    "finetune_lr",
    "finetune_blocks",
    "finetune_epochs",
)


def _number(text: str) -> str:
    """A CSV cell as the page shows it: 3 significant digits for numbers, blanks and words as they are."""
    try:
        return f"{float(text):.3g}"
    except ValueError:
        return text


def trials_table(trials_csv: Path) -> list[str]:
    """Every trial of the study as markdown rows (the CSV is a run output, not kept in the repository)."""
    with trials_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    shown = [p for p in PARAMS if any(row.get(f"param_{p}") for row in rows)]
    header = ["trial", "state", "val acc", "val loss", "epochs", "s", *(p.replace("_", " ") for p in shown)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        label = f"{row['trial']} (defaults)" if row["baseline"] == "True" else row["trial"]
        acc = f"{float(row['val_acc']):.0%}" if row["val_acc"] else ""
        cells = [
            label,
            row["state"],
            acc,
            _number(row["val_loss"]),
            row["epochs"],
            f"{float(row['seconds']):.0f}",
            *(_number(row.get(f"param_{p}") or "") for p in shown),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(seconds: float) -> None:
    data = dataset("dtd10")
    folder = SEARCH
    began = time.perf_counter()
    result = cnnlab.tune(data, time_budget=seconds, out=folder, model="efficientnet_lite0", pretrained=True)
    wall = time.perf_counter() - began
    rows = {r["trial"]: r for r in result.trials}
    baseline = next(r for r in result.trials if r["baseline"] and r["state"] == "complete")
    best = result.best
    lines = ["| run | val acc | test acc | test acc with TTA | TTA ms/image (plain) |", "|---|---|---|---|---|"]
    for label, row in (("trial 0: the defaults", baseline), (f"trial {best['trial']}: the search's best", best)):
        metrics = cnnlab.evaluate(row["run"], tta=True)
        cost = metrics["tta"]["ms_per_image"]
        lines.append(
            f"| {label} | {row['val_acc']:.2%} | {metrics['accuracy']:.2%} | {metrics['tta']['accuracy']:.2%} "
            f"| {cost['tta']:.1f} ({cost['plain']:.1f}) |"
        )
    draw_views(Path(best["run"]), FIGURES / "tta_views_dtd10.png")
    states = [r["state"] for r in rows.values()]
    splits = json.loads((Path(baseline["run"]) / "run.json").read_text())["data"]["splits"]
    counts = ", ".join(f"{v['count']} {k}" for k, v in splits.items())
    params = {k[6:]: v for k, v in best.items() if k.startswith("param_")}
    FIGURES.mkdir(parents=True, exist_ok=True)
    for name in ("history.png", "importance.png"):
        if (folder / name).is_file():
            shutil.copy(folder / name, FIGURES / f"tune_dtd10_{name}")
    write_page(
        "tune",
        "cnnlab tune on dtd10: the search's best vs the defaults",
        f"python bench/bench_tune.py {seconds:g}",
        f"EfficientNet-Lite0 with its built-in ImageNet weights on dtd10 ({counts} photos). Budget {seconds:g} s for the "
        f"whole search ({result.seconds_used:.0f} s used by the trials, {wall:.0f} s wall time with the best's "
        f"test scoring); {len(states)} trials: {states.count('complete')} complete, {states.count('pruned')} "
        f"pruned, {states.count('fail')} failed. Trial 0 is the default transfer run. The search compared "
        f"validation accuracy only; the test column of trial 0 was scored afterwards for this page. Best "
        f"settings: {json.dumps(params)}.",
        lines
        + [
            "",
            "Every trial (a pruned trial's accuracy is its last report to the pruner):",
            "",
            *trials_table(folder / "trials.csv"),
        ],
    )


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 3600.0)
