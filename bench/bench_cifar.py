"""CIFAR-10 from scratch as users live it: ``cnnlab train CIFAR --recipe fast-cifar`` in 10 and 15 minutes.

    PYTHONPATH=src python bench/bench_cifar.py --minutes 10,15         # the goals, ~30 min
    PYTHONPATH=src python bench/bench_cifar.py --minutes 15 --main-src ../main/src  # + main's code, same way
    PYTHONPATH=src python bench/bench_cifar.py --render                # the page from stored results
    PYTHONPATH=src python bench/bench_cifar.py --speed                 # step speed-ups, speedups_cifar.md

Each point is one whole process, ``cnnlab train cifar10 --recipe fast-cifar --time-budget T``, from
process start to the written report, with T = the minutes minus the command's fixed costs (start-up,
decoding, the final evaluation, figures, report), measured first by a short run of the same
command. Test accuracy is the run's own (metrics.json). The decoded-image cache is warm (a
first run on the folder decodes 60,000 JPEGs first: its phase line shows how long). Results
accumulate in bench/out/cifar.json; the page also shows the variants measured by
``bench/cifar_variants.py`` (validation accuracy at fixed epochs, training speed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from bench_mnist_whole import run_cnnlab
from common import DATASETS, OUT, dataset, machine, speed_table, write_page

from cnnlab.phases import phase_line

RESULTS = OUT / "cifar.json"
VARIANTS = OUT / "cifar_variants.json"
GOALS = {10: 0.90, 15: 0.93}  # the goals: minutes of whole command -> test accuracy
MARGIN = 10.0  # seconds kept free: the time budget's own stop can run over by a few seconds


def whole_run(source: Path, work: Path, minutes: float, src: Path | None, label: str, fixed: float | None) -> dict:
    """The run whose whole command should last ``minutes``; a short probe run first measures the
    fixed costs (unless ``fixed`` gives them)."""
    cache = DATASETS.parent  # the user's own cache: warm after the first run on the folder
    if fixed is None:
        probe = run_cnnlab(source, work, f"{label}-probe", cache, ["--time-budget", "20"], "fast-cifar", src)
        fixed = probe["wall"] - probe["timing"]["phases"].get("training", 0.0)
    budget = max(minutes * 60 - fixed - MARGIN, 30.0)
    print(f"{label}: fixed costs {fixed:.0f} s -> --time-budget {budget:.0f}", flush=True)
    load_before = machine().split("load average ")[1]
    run = run_cnnlab(source, work, f"{label}-{minutes:g}", cache, ["--time-budget", f"{budget:.0f}"], "fast-cifar", src)
    epochs = sum(stage.get("epochs", 0) for stage in run["meta"].get("stages", []))  # epochs begun
    return {
        "code": label,
        "minutes": minutes,
        "budget": round(budget),
        "wall": round(run["wall"], 1),
        "acc": run["accuracy"],
        "phases": run["timing"].get("phases", {}),
        "epochs": epochs,
        "threads": run["meta"].get("attempts", [{}])[-1].get("threads"),
        "fixed": round(fixed, 1),
        "load_before": load_before,
        "load_after": machine().split("load average ")[1],
    }


def whole_table(runs: list[dict]) -> list[str]:
    """One row per whole command: goal, wall time, test accuracy, where the time went."""
    rows = [
        "| code | goal | --time-budget (s) | whole command (s) | test accuracy | goal met | epochs | "
        "threads | load average before / after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        goal = GOALS.get(int(r["minutes"]))
        met = (
            "-"
            if goal is None
            else (
                "yes"
                if r["acc"] >= goal and r["wall"] <= r["minutes"] * 60
                else f"no: {100 * (goal - r['acc']):.2f} points short"
            )
        )
        rows.append(
            f"| {r['code']} | {goal or 0:.0%} in {r['minutes']:g} min | {r['budget']} | {r['wall']:.0f} | "
            f"{r['acc']:.2%} | {met} | {r['epochs']} | {r['threads']} | {r['load_before']} / "
            f"{r['load_after']} |"
        )
    rows.append("")
    rows += [f"- {r['code']}, {r['minutes']:g} min: {phase_line(r['phases'], r['wall'])}" for r in runs]
    return rows


def variants_table(stored: dict) -> list[str]:
    """Validation accuracy per variant at fixed epochs (mean over seeds), with and without TTA."""
    runs = stored.get("runs", [])
    rows = [
        "| variant | epochs | runs | val acc, no TTA | flip TTA | flip + translate TTA | "
        "TTA time on 5,000 val images (s) | flip + translate TTA per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted({(r["variant"], r["epochs"]) for r in runs}, key=lambda k: (k[1], k[0] != "base", k[0])):
        group = sorted((r for r in runs if (r["variant"], r["epochs"]) == key), key=lambda r: r["seed"])
        mean = {t: statistics.mean(r["val"][t] for r in group) for t in ("none", "flip", "flip-translate")}
        seconds = statistics.median(r["val"]["flip-translate_s"] for r in group)
        seeds = ", ".join(f"{r['seed']}: {r['val']['flip-translate']:.2%}" for r in group)
        rows.append(
            f"| {key[0]} | {key[1]} | {len(group)} | {mean['none']:.2%} | {mean['flip']:.2%} | "
            f"{mean['flip-translate']:.2%} | {seconds:.1f} | {seeds} |"
        )
    loads = [float(r["load"].split(",")[0]) for r in runs]
    if loads:
        rows += [
            "",
            f"Load average (1 min) as these ended: {min(loads):.1f}-{max(loads):.1f} "
            "(accuracy at fixed epochs does not depend on it).",
        ]
    for entry in stored.get("speed", []):
        rows += [
            "",
            f"Training step speed (images/s, forward + backward + SGD, interleaved; {entry['machine']}):",
            "",
            "| variant | images/s | time per image vs base |",
            "|---|---|---|",
        ]
        base = entry["images_per_s"]["base"]
        rows += [f"| {name} | {speed:.0f} | {base / speed:.2f}x |" for name, speed in entry["images_per_s"].items()]
    return rows


VARIANT_COMMANDS = [  # what made the variants' rows below (bench/out/cifar_variants.json)
    "PYTHONPATH=src python bench/cifar_variants.py --data CIFAR10 --epochs 5 base airbench  (earlier code)",
    "flock /work/scratch/bench.lock python bench/cifar_variants.py --data CIFAR10 --speed --rounds 3 base airbench "
    "width-3/4 width-full batch-128 batch-512 fp32",
    "PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 19 python bench/cifar_variants.py --data CIFAR10 --epochs 5 "
    "--threads 1 --seed S VARIANT  (S = 0, 1; base alternate-flip lookahead linear-lr, one run at a time)",
]
NOTES = [
    "- The data: `/work/shared/data/cifar10.tar.gz`, CIFAR-10 re-encoded as small JPEGs (about 330 bytes "
    "an image), so accuracies are a little below what the original pixels give.",
    "- Before this page (main, `bench/common.py: train_once`, the training loop in-process, load 1-3): "
    "85.98% test after a 10-minute training budget, 88.07% after 20, one thread, about 720 training "
    "images/s. That path never trained the whitening filters; `cnnlab train` did (its all-layers stage "
    "set `requires_grad` on every parameter): fixed weights are buffers now.",
    "- Variants: one seed each, 5 epochs (the schedule fitted to 5 epochs). `airbench` is airbench94's "
    "dirac start + BatchNorm scales fixed at 1 with 64x faster shifts + an EMA of the weights (0.99 a "
    "step), together: 2.6 points ahead after 3 epochs, equal after 5, so the recipe leaves them off. "
    "The levers alone (ema, dirac, bn-shift), batch 128/512 and lr 0.4 were queued but stopped unfinished "
    "to free the machine for the whole commands (a 5-epoch run took 40 minutes at load 13).",
    "- Speed ratios (interleaved, load 13, so only the ratios mean anything): bf16-mixed is 1.9x faster "
    "than fp32 here (the CPU has avx512_bf16); 3/4 width costs 1.8x the time per image and full "
    "airbench94 width 2.9x (fewer epochs in the same minutes); batch 128 and 512 are within 7% of 256; "
    "under this load 2 threads were 3.9x slower than 1 (idle: 1.8x faster, `speedups_cifar.md`), which "
    "`--threads 0` (auto) follows.",
    "- The first 10-minute run scored the six test views as one batch (234 s of evaluation at load 8); "
    "the later runs score one view per call (1.6x faster: a six-fold batch outgrows the caches). The "
    "evaluation phase also draws the report's Grad-CAM and other figures.",
    "- Whole-pixel translation (`--translate 2`, pad by reflection and crop: the recipe since this "
    "change) against the bilinear 2-px shifts it replaced, 5 epochs, seed 0, validation, AMD EPYC "
    "machine: no TTA 84.14% vs 82.94% (+1.20), flip TTA 84.72% vs 83.92%, flip + translate TTA 85.14% "
    "vs 84.42% (+0.72), the same ~1,420 training images/s (bf16, 2 threads). The per-run rows were "
    "lost with that machine, so they are not in the table; `cifar_variants.py base shifts` remakes them.",
    "- The recipe's 10 epochs had capped a 567-s budget: that run (`earlier code`, 400 s, 87.10%) "
    "stopped with 3 minutes unused. The recipe now allows 60 epochs and sets a 560-s budget of its own, "
    "so a plain `--recipe fast-cifar` fills about 10 minutes and `--time-budget` sets the length.",
    "- Two machines: the `earlier code` rows ran on an AMD EPYC with avx512_bf16 (bf16-mixed training, "
    "1.9x faster than fp32 there); the `this code` rows on an Intel Xeon without it, where cnnlab trains "
    "in fp32 (emulated bf16 measured 3.2x slower than fp32 on it: 80 vs 254 images/s for a bare "
    "step) at 53-55 s per epoch against 38 s before. The accuracy per minute is therefore not "
    "comparable across them; at the AMD machine's speed the 10 minutes would hold about 15 epochs.",
    "- Where the 10 minutes go (this code): training 552 s, evaluation 22 s (10,000 test images x six "
    "TTA views, plus Grad-CAM for the report), start-up 5 s, data 2 s (warm cache; a cold first run "
    "decodes 60,000 JPEGs in 13.5 s with progress: `cnnlab data cache CIFAR10 --model fast_cifar`, "
    "17.7 s whole command), figures 2 s. Missing 90% by 2.3 points and 93% by 4.2 is the training loop's "
    "speed on 2 CPU cores: airbench94 needs ~10 epochs of a 2.9x wider network (`width-full` above) "
    "for 94%; at that width 10 epochs take about 25 minutes here.",
    "- The plain command as a user types it, `cnnlab train CIFAR10 --recipe fast-cifar` (the recipe's own "
    "560-s budget, no flags; `/usr/bin/time`, this code, Intel Xeon, quiet): 591.6 s, 87.86% test "
    "(10 epochs and the start of an 11th, which the budget ended).",
    "- airbench's levers, this code (the rows without `earlier code`: AMD EPYC, bf16, "
    "1 thread, `nice -n 19` beside two other jobs, load 2-7), 5 epochs, seeds 0 and 1, validation with the "
    "recipe's flip + translate TTA: base 85.20% / 84.92% (mean 85.06%). `--flip-mode alternate` "
    "(each image mirrored on every other epoch, a seeded half in the first): 84.92% / 84.72% (mean 84.82%, "
    "-0.24; no TTA -0.14): both seeds a little below. `--lookahead 5` (timm's, alpha 0.5): 84.36% / 84.16% (mean 84.26%, -0.80; no TTA -0.86), worse on both seeds. "
    "`--scheduler linear` (airbench's warm-up from 0.2x over 23% of the steps, then linear to 0.07x) in "
    "place of the one-cycle: 84.88% / 85.90% (mean 85.39%, +0.33; no TTA -0.01): below on seed 0, +0.98 on seed 1, so the only one worth more seeds. No lever reached the +0.4 points over 2 seeds the recipe "
    "asks of a change, so `fast-cifar` keeps random flips, plain SGD and its one-cycle. airbench's "
    "alternating flip pays in its ~10-epoch runs at full width; at 5 epochs of this narrower net the "
    "flips' order made no difference a second seed could tell from noise (the two base seeds differ by "
    "0.28 points). Lookahead and the flip together were queued but not run in the time.",
]


def render(command: str) -> str:
    stored = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"whole": []}
    commands = sorted({r["command"] for r in stored.get("whole", []) if r.get("command")})
    command = "`; `".join(commands + VARIANT_COMMANDS) if commands else command
    variants = json.loads(VARIANTS.read_text()) if VARIANTS.is_file() else {}
    body = [
        "## Whole commands",
        "",
        *whole_table(stored.get("whole", [])),
        "",
        "## What was tried (validation split, fixed epochs: `bench/cifar_variants.py`)",
        "",
        *variants_table(variants),
        "",
        "## Notes",
        "",
        *NOTES,
    ]
    return write_page(
        "cifar",
        "CIFAR-10 from scratch, whole command: --recipe fast-cifar",
        command,
        "Process start to the written report of `cnnlab train CIFAR10 --recipe fast-cifar "
        "--time-budget T`, T chosen so the whole command fits the minutes (warm decoded-image "
        "cache); test accuracy from the run's metrics.json. This 2-core machine was shared "
        "with other work: see the load averages.",
        body,
        stored.get("machine"),
    )


SPEED_NOTE = (  # the run before this machine, kept because its CPU differs in the one way that matters here
    "On the AMD EPYC this project ran on before (avx512_bf16, so bf16 is native), the same command measured "
    "in us per image: fp32 NCHW 1593, channels_last 1080 (0.68x), bf16-mixed 972 (0.61x), channels_last + "
    "bf16-mixed 663 (0.42x), + compile 776 (0.49x), 1 thread 1196 (0.75x). Where bf16 is emulated (no "
    "avx512_bf16 or AMX, as on an Intel Xeon without them) it is 2-3x slower than fp32, so cnnlab's "
    "bf16-mixed recipes train in fp32 there (`training/trainer.py: resolve_precision`)."
)


def speed(command: str) -> int:
    """Training-step time of each speed-up (layout, precision, compile, threads) for fast_cifar."""
    write_page(
        "speedups_cifar",
        "Training-step speed-ups on this CPU (fast_cifar, 32x32x3, batch 256)",
        command,
        "Forward + backward + SGD step on random batches; variants timed round-robin, 5 rounds.",
        [*speed_table("fast_cifar", 3, 32, 256, rounds=5), "", SPEED_NOTE],
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", default="", help="comma-separated whole-command minutes, e.g. 10,15")
    p.add_argument("--main-src", type=Path, help="also run this cnnlab source tree (main's), the same way")
    p.add_argument("--render", action="store_true", help="only rewrite the page from stored results")
    p.add_argument("--speed", action="store_true", help="only the training-step speed-ups (speedups_cifar.md)")
    p.add_argument(
        "--data", type=Path, help="the CIFAR-10 folder (default: unpacked from ../shared/data into the cache)"
    )
    p.add_argument("--fixed", type=float, help="the fixed costs in seconds (default: measured by a probe run)")
    args = p.parse_args(argv)
    command = "PYTHONPATH=src python bench/bench_cifar.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.speed:
        return speed(command)
    if not args.render:
        source = args.data or dataset("cifar10")
        stored = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"whole": []}
        stored.setdefault("whole", [])
        codes = [("this code", None)] + ([("main", args.main_src.resolve())] if args.main_src else [])
        fixed = {label: args.fixed for label, _ in codes}  # measured once per code, by its first run's probe
        with tempfile.TemporaryDirectory() as tmp:
            for minutes in [float(m) for m in args.minutes.split(",") if m.strip()]:
                for label, src in codes:
                    row = whole_run(source, Path(tmp), minutes, src, label, fixed[label]) | {"command": command}
                    fixed[label] = row["fixed"]
                    print(json.dumps(row), flush=True)
                    stored["whole"].append(row)
                    stored["machine"] = machine()  # the page's machine line: where the whole commands ran
                    OUT.mkdir(exist_ok=True)
                    RESULTS.write_text(json.dumps(stored, indent=1))
    render(command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
