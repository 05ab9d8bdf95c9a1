"""Deploy: PyTorch eager vs ONNX Runtime FP32 vs INT8, the INT8 settings search, threads, pruning.

    PYTHONPATH=src python bench/bench_deploy.py              # about 30-40 min on the shared 2-core box
    PYTHONPATH=src python bench/bench_deploy.py --quick      # small subsets, a few minutes: a smoke run

Every model is trained and shrunk through cnnlab's own commands, run in this process (``cnnlab
train``, ``export``, ``quantize``, ``benchmark``, ``prune``): what a user gets.

1. EfficientNet-Lite0 at 224 px, transfer-trained (``--pretrained``, one fine-tuning epoch) on
   real photos: Imagenette (10 classes, 2,000 training and 1,000 test photos). ``cnnlab quantize``
   then ``cnnlab benchmark``: size, batch-1 latency, batch-32 throughput and test accuracy of
   PyTorch eager, ONNX Runtime FP32 and INT8, side by side (interleaved), 1 thread.
2. The INT8 settings search re-measured on that model: cnnlab's settings against ONNX Runtime's
   defaults and the other choices (format, activation type, per-channel, reduce_range,
   calibration method), all timed in one interleaved run.
3. Threads: 1 vs 2 for each runtime, interleaved (the default of ``--threads``).
4. The whole ``cnnlab predict`` command on 200 photos, the checkpoint vs the run's default
   runtime (separate processes, alternated).
5. The MNIST lesson CNN (simple_cnn, 2 epochs on 60,000 digits): quantize + benchmark.
6. Structured pruning at 50% of channels: fast_cnn on MNIST, 2 epochs of fine-tuning.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import dataset, write_page  # noqa: E402
from cnnlab.cli.main import main as cnnlab  # noqa: E402
from cnnlab.deploy.benchmark import normalized, time_models  # noqa: E402
from cnnlab.deploy.quantize import calibration_set, operator_counts, quantize_file  # noqa: E402
from cnnlab.deploy.runtime import OrtModule, ort_session  # noqa: E402
from cnnlab.evaluation.run_evaluation import run_data  # noqa: E402
from cnnlab.models.inference import accuracy  # noqa: E402
from cnnlab.tables import Table  # noqa: E402
from cnnlab.training.checkpoint import load_trained  # noqa: E402
from cnnlab.training.run_dir import RunFiles  # noqa: E402

# name -> quantize_file settings (cnnlab's chosen ones first).
SEARCH = {
    "cnnlab: QDQ, U8 act / S8 weights, per-channel, MinMax": {},
    "ORT defaults: QDQ, S8 act / S8 weights, per-channel": {"activation_type": "QInt8"},
    "QOperator, U8/S8, per-channel": {"quant_format": "QOperator"},
    "QDQ, U8/S8, per-tensor": {"per_channel": False},
    "QDQ, U8/S8, per-channel, reduce_range": {"reduce_range": True},
    "QDQ, U8/S8, per-channel, Percentile": {"calibrate_method": "Percentile"},
    "QOperator, S8/S8, per-channel": {"quant_format": "QOperator", "activation_type": "QInt8"},
}


def run(*args: object) -> float:
    """Runs ``cnnlab ARGS`` in this process; returns its wall time (a failure stops the benchmark)."""
    started = time.perf_counter()
    code = cnnlab([str(a) for a in args])
    if code != 0:
        raise SystemExit(f"cnnlab {' '.join(map(str, args))} failed with exit code {code}")
    return time.perf_counter() - started


def train(runs: Path, name: str, *args: object) -> float:
    """``cnnlab train ... --name NAME`` unless a finished run of that name is already in ``runs``
    (with ``--workdir``, a second call redoes only the measurements)."""
    done = runs / name / "metrics.json"
    if done.is_file():
        print(f"reusing {done.parent}")
        return float(json.loads((runs / name / "run.json").read_text())["timing"]["total_seconds"])
    return run("train", *args, "--runs-dir", runs, "--name", name)


def table_of(files: RunFiles, name: str) -> Table:
    table = Table.load(files.table(name))
    assert table is not None, name
    return table


def search_int8(files: RunFiles, calibration: int, rounds: int) -> tuple[list[str], dict[str, dict]]:
    """Each setting quantized from the run's model.onnx, then all timed interleaved, 1 thread."""
    trained = load_trained(files)
    data = run_data(files, trained)
    test = data.splits["test"]
    images = calibration_set(data.splits["train"], calibration, trained.normalize, seed=0)
    models, results = {"FP32": OrtModule(ort_session(files.onnx, 1))}, {}
    with tempfile.TemporaryDirectory() as folder:  # sessions keep their model in memory once created
        for label, settings in SEARCH.items():
            path = Path(folder) / f"{len(models)}.onnx"
            began = time.perf_counter()
            quantize_file(files.onnx, path, images, {}, **settings)
            results[label] = {"calibrate_s": time.perf_counter() - began, "ops": operator_counts(path)}
            models[label] = OrtModule(ort_session(path, 1))
            print(f"{label}: {results[label]['calibrate_s']:.0f} s", flush=True)
    with torch.inference_mode():
        reference = torch.cat(
            [
                models["FP32"](normalized(test.images[i : i + 50], trained.normalize, 50))
                for i in range(0, len(test), 50)
            ]
        ).argmax(1)
    timings = time_models(
        {k: (m, normalized(test.images, trained.normalize)) for k, m in models.items()}, rounds, max_seconds=240
    )
    base = timings["FP32"]
    rows = []
    for label, model in models.items():
        with torch.inference_mode():
            top = torch.cat(
                [model(normalized(test.images[i : i + 50], trained.normalize, 50)) for i in range(0, len(test), 50)]
            ).argmax(1)
        acc = float((top == test.labels).float().mean())
        agree = float((top == reference).float().mean())
        t = timings[label]
        ops = results.get(label, {}).get("ops", {})
        integer = sum(n for op, n in ops.items() if op.startswith("QLinear") or op in ("QGemm", "ConvInteger"))
        floats = sum(n for op, n in ops.items() if op in ("Conv", "Gemm", "MatMul"))
        rows.append(
            f"| {label} | {100 * acc:.1f}% | {100 * agree:.1f}% | {t.p50_ms:.2f} ({base.p50_ms / t.p50_ms:.2f}x) "
            f"| {t.throughput:.0f} ({t.throughput / base.throughput:.2f}x) | "
            f"{integer if ops else '—'} / {floats if ops else '—'} | "
            f"{results.get(label, {}).get('calibrate_s', 0):.0f} |"
        )
        results.setdefault(label, {}).update(accuracy=acc, agree=agree, p50=t.p50_ms, throughput=t.throughput)
    head = [
        "| setting | test accuracy | top-1 agrees with FP32 | batch 1 ms (vs FP32) | batch 32 img/s (vs FP32) | "
        "integer / float compute ops run | calibration s |",
        "|---|---|---|---|---|---|---|",
    ]
    return head + rows, results


def thread_table(files: RunFiles, rounds: int) -> list[str]:
    """FP32 and INT8 in ONNX Runtime and PyTorch eager, with 1 and with 2 threads, interleaved."""
    trained = load_trained(files)
    test = run_data(files, trained).splits["test"]
    images = normalized(test.images, trained.normalize)
    eager = trained.model.to(memory_format=torch.channels_last)

    class Threaded(torch.nn.Module):  # eager PyTorch with its own thread count per call
        def __init__(self, threads: int) -> None:
            super().__init__()
            self.threads = threads

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            torch.set_num_threads(self.threads)
            return eager(x.contiguous(memory_format=torch.channels_last))

    candidates = {}
    for threads in (1, 2):
        candidates[f"PyTorch eager, {threads}"] = (Threaded(threads), images)
        candidates[f"ORT FP32, {threads}"] = (OrtModule(ort_session(files.onnx, threads)), images)
        candidates[f"ORT INT8, {threads}"] = (OrtModule(ort_session(files.int8_onnx, threads)), images)
    timings = time_models(candidates, rounds, max_seconds=240)
    torch.set_num_threads(1)
    rows = [
        "| runtime | batch 1 ms, 1 thread | batch 1 ms, 2 threads | batch 32 img/s, 1 thread | "
        "batch 32 img/s, 2 threads |",
        "|---|---|---|---|---|",
    ]
    for name in ("PyTorch eager", "ORT FP32", "ORT INT8"):
        one, two = timings[f"{name}, 1"], timings[f"{name}, 2"]
        rows.append(f"| {name} | {one.p50_ms:.2f} | {two.p50_ms:.2f} | {one.throughput:.0f} | {two.throughput:.0f} |")
    return rows


def predict_commands(files: RunFiles, folder: Path, repeats: int) -> list[str]:
    """Wall time of the whole ``cnnlab predict`` process: the checkpoint vs the default runtime."""
    times: dict[str, list[float]] = {"pytorch": [], "auto": []}
    chosen = ""
    for _ in range(repeats):
        for runtime in times:
            began = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cnnlab",
                    "predict",
                    str(files.root),
                    str(folder),
                    "--runtime",
                    runtime,
                    "--format",
                    "csv",
                ],
                capture_output=True,
                text=True,
            )
            times[runtime].append(time.perf_counter() - began)
            if done.returncode != 0:
                raise SystemExit(done.stderr)
            if runtime == "auto":
                chosen = next(line for line in done.stderr.splitlines() if line.startswith("info: runtime:"))
    count = sum(1 for _ in folder.rglob("*.JPEG"))
    a, b = statistics.median(times["pytorch"]), statistics.median(times["auto"])
    return [
        f"| `cnnlab predict RUN {count} photos --runtime pytorch` | {a:.1f} s |",
        f"| `cnnlab predict RUN {count} photos` (default: {chosen.removeprefix('info: runtime: ').split(' (')[0]}) | "
        f"{b:.1f} s ({a / b:.2f}x) |",
    ]


def subset(source: Path, target: Path, per_class: int) -> Path:
    """A folder of ``per_class`` photos of each class of ``source`` (symlinks)."""
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (target / folder.name).mkdir(parents=True, exist_ok=True)
        for photo in sorted(folder.iterdir())[:per_class]:
            if not (target / folder.name / photo.name).exists():
                (target / folder.name / photo.name).symlink_to(photo)
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small subsets and few rounds: a smoke run")
    p.add_argument("--rounds", type=int, default=30, help="interleaved batch-1 rounds")
    p.add_argument("--workdir", default=None, help="keep the runs here (default: a temporary folder)")
    args = p.parse_args(argv)
    command = "PYTHONPATH=src python bench/bench_deploy.py " + " ".join(argv if argv is not None else sys.argv[1:])
    torch.set_num_threads(1)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-deploy-"))
    runs = work / "runs"
    photos = dataset("imagenette_sub")
    mnist = dataset("mnist")
    quick = ["--epochs", "1"] if args.quick else []
    if args.quick:
        photos = subset(photos / "train", work / "photos" / "train", 30).parent
        subset(dataset("imagenette_sub") / "test", work / "photos" / "test", 10)
        mnist = subset(mnist / "train", work / "mnist" / "train", 300).parent
        subset(dataset("mnist") / "test", work / "mnist" / "test", 100)
    seconds = {}
    lite0 = RunFiles(runs / "lite0")
    seconds["train Lite0"] = train(
        runs, "lite0", photos, "--model", "efficientnet_lite0", "--pretrained", "--finetune-epochs", "1"
    )
    seconds["quantize Lite0"] = run("quantize", lite0.root, "--calibration", 64 if args.quick else 512)
    seconds["benchmark Lite0"] = run("benchmark", lite0.root, "--rounds", args.rounds)
    lite0_table = table_of(lite0, "benchmark")
    search_rows, search = search_int8(lite0, 64 if args.quick else 256, args.rounds)
    threads_rows = thread_table(lite0, args.rounds)
    test_photos = subset(dataset("imagenette_sub") / "test", work / "predict", 2 if args.quick else 20)
    predict_rows = predict_commands(lite0, test_photos, 3)
    simple = RunFiles(runs / "simple")
    seconds["train simple_cnn"] = train(runs, "simple", mnist, "--model", "simple_cnn", "--epochs", "2", *quick)
    seconds["quantize simple_cnn"] = run("quantize", simple.root)
    seconds["benchmark simple_cnn"] = run("benchmark", simple.root, "--rounds", args.rounds)
    fast = RunFiles(runs / "fast")
    seconds["train fast_cnn"] = train(runs, "fast", mnist, "--model", "fast_cnn", "--epochs", "2", *quick)
    shutil.rmtree(fast.pruned, ignore_errors=True)
    seconds["prune fast_cnn"] = run(
        "prune", fast.root, "--sparsity", "0.5", "--finetune-epochs", "1" if args.quick else "2"
    )
    pruned = RunFiles(fast.pruned / "structured-50")
    prune_table = table_of(pruned, "prune")
    for files in (fast, pruned):
        run("export", files.root)
        run("benchmark", files.root, "--rounds", args.rounds)
    page(
        command,
        lite0_table,
        table_of(lite0, "quantize"),
        search_rows,
        search,
        threads_rows,
        predict_rows,
        table_of(simple, "benchmark"),
        prune_table,
        table_of(fast, "benchmark"),
        table_of(pruned, "benchmark"),
        seconds,
    )
    print(f"runs kept in {work}")
    return 0


def page(
    command: str,
    lite0: Table,
    quantize: Table,
    search_rows: list[str],
    search: dict,
    threads: list[str],
    predict: list[str],
    simple: Table,
    prune: Table,
    fast: Table,
    pruned: Table,
    seconds: dict,
) -> None:
    from bench_deploy_page import body

    write_page(
        "deploy",
        "Deploy: ONNX Runtime, INT8, pruning",
        command,
        "Each model was trained and shrunk through cnnlab's own commands in one process; each table's "
        "runtimes were timed interleaved (round-robin, median of the rounds), 1 thread unless said.",
        body(lite0, quantize, search_rows, search, threads, predict, simple, prune, fast, pruned, seconds),
    )


if __name__ == "__main__":
    sys.exit(main())
