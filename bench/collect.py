"""Rebuilds BENCHMARKS.md from the tables the benchmarks wrote to bench/out/ (run after them)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTIONS = [
    ("goals", "Goals of issues #29 and #32 at a glance"),
    ("loader", "Data loading (issue #3)"),
    ("augment_epoch", "Augmentation cost per epoch (issue #4)"),
    ("augment", "Batched augmentation vs per-image PIL (issue #4)"),
    ("transfer", "Transfer learning (issue #5)"),
    ("photo_folder", "A small folder of real photos (issue #5)"),
    ("eval_batch", "Inference batch size on a CPU (issue #5)"),
    ("finetune_step", "Fine-tuning step: channels_last (issue #5)"),
    ("mnist", "MNIST from scratch (issue #7)"),
    ("cifar", "CIFAR-10 from scratch (issue #7)"),
    ("mnist_whole", "MNIST, the whole command against the lesson's Keras (issue #18)"),
    ("speedups_mnist", "Training-step speed-ups, MNIST-sized networks (issue #7)"),
    ("speedups_cifar", "Training-step speed-ups, CIFAR-sized network (issue #7)"),
    ("explain", "Explain: the report's figures and the commands (issue #13)"),
    ("ddp_cpu", "Two DDP processes on the CPU (issue #16)"),
    ("compare", "Comparing architectures: the lesson's section 7 measured (issue #14)"),
    ("compare_photos", "Comparing architectures on real photos: the lesson's exercise 2 (issue #14)"),
    ("deploy", "Deploy: ONNX Runtime, INT8 and pruning (issue #15)"),
    ("serve", "Serving: requests/s and latency under 16 clients (issue #17)"),
    ("serve_window", "Serving: the batching window (issue #17)"),
    ("bigdata", "Data beyond memory (issue #22)"),
    ("shards", "Streaming shards: cnnlab data pack (issue #22)"),
    ("crops", "Stored margin and centre crops: whole commands (issue #22)"),
    ("crops_probe", "Stored margin and centre crops: frozen features, paired splits (issue #22)"),
    ("finetune", "Fine-tuning that pays for itself: stage 2 on real photos (issue #20)"),
    ("load", "Commands on a busy machine: cnnlab load (issue #34)"),
    ("load_pinned", "Commands on a busy machine: pinned load (issue #34)"),
    ("omp_wait", "OpenMP wait policy and thread count (issue #34)"),
    ("lr_find", "Learning-rate finder: which rule reads the curve (issue #31)"),
    ("label_issues", "Label issues: flipped labels found on real photos (issue #31)"),
    ("tune", "cnnlab tune: an hour's search against the defaults, and TTA (issue #31)"),
    ("refit", "Transfer that uses every labelled photo: refit on train + val (issue #29)"),
    ("crop_mode", "The centre crop against the whole photo: --crop-mode (issue #29)"),
    ("prune", "Pruning a Lite0 transfer run: what 50% of the channels costs (issue #29)"),
    ("distill", "Distillation: a pruned copy of the teacher, distilled vs alone (issue #29)"),
    ("distill_long", "Distillation trained 4x longer: 16 epochs instead of 4 (issue #29)"),
    ("distill_augment", "Distillation with a new view of each photo every epoch: --augment light (issue #29)"),
    ("mnist_one_epoch", "MNIST in one epoch: the fast recipe over 5 seeds (issue #32)"),
]
INTRO = """# Benchmarks

Every figure here comes from a committed script in `bench/`, run on this project's machine: an
AMD EPYC with **2 logical cores, no GPU, 24 GiB**, torch 2.14.1 (CPU), Python 3.11. The machine is
shared and was busy while these ran (load average 3-6 on 2 cores), so each script runs the things
it compares side by side, interleaved, and the **ratio** is the figure to trust; absolute seconds
vary from run to run. `make bench` runs them all (each writes `bench/out/<name>.md`), then
`python bench/collect.py` rebuilds this page.
"""


def main() -> None:
    parts = [INTRO]
    for name, title in SECTIONS:
        path = HERE / "out" / f"{name}.md"
        if not path.is_file():
            continue
        lines = path.read_text().strip().splitlines()
        if lines and lines[0].startswith("# "):
            lines = lines[1:]
        parts.append(f"## {title}\n\n" + "\n".join(lines).strip() + "\n")
    (HERE.parent / "BENCHMARKS.md").write_text("\n".join(parts))


if __name__ == "__main__":
    main()
