"""Serving: requests/s and p50/p99 latency of ``cnnlab serve`` under 16 concurrent clients.

    PYTHONPATH=src python bench/bench_serve.py --workdir /tmp/serve-bench          # about 10 min
    PYTHONPATH=src python bench/bench_serve.py --workdir /tmp/serve-bench --quick  # a smoke run

Two models, each trained by cnnlab's own commands in this process and exported with ``cnnlab
export``: the MNIST lesson CNN (simple_cnn, 1 epoch on the 5,000-digit sample, 28 px) and
EfficientNet-Lite0 at 224 px (ImageNet weights, ``--pretrained``, one frozen-stage epoch on 60
Imagenette photos: the weights only set the accuracy, not the speed measured here).

Per model, four real server processes (``cnnlab serve --port 0``) run side by side: PyTorch
eager and ONNX Runtime FP32, each with batching on (``--batching on --max-batch 16``, no window:
the default, see bench_serve_window.py) and off (``--batching off``: one image per inference call).
Rounds visit them in turn
(interleaved), each a burst of requests from 16 client threads with keep-alive connections, each
request one image (a real JPEG photo for Lite0, a PNG digit for MNIST); medians over the rounds.
The clients run on the same 2 cores as the server: what one machine can do end to end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "serve"))  # the tests' server launcher and HTTP client

from common import dataset, write_page  # noqa: E402
from servers import Server, multipart, request, start_server  # noqa: E402
from cnnlab.cli.main import main as cnnlab  # noqa: E402
from cnnlab.serving.settings import BATCHING_GAIN  # noqa: E402

CLIENTS = 16
PHOTOS = Path("/work/scratch/data/imagenette_sub")  # unpacked imagenette_sub (else from ../shared/data)
RUNTIME_NAMES = {"pytorch": "PyTorch eager", "onnx": "ONNX Runtime FP32"}
VARIANTS = [("pytorch", 16), ("pytorch", 1), ("onnx", 16), ("onnx", 1)]  # (runtime, --max-batch)


def _train(workdir: Path, name: str, data: str, *options: str) -> Path:
    run = workdir / "runs" / name
    if not (run / "model.onnx").is_file():
        shutil.rmtree(run, ignore_errors=True)
        assert cnnlab(["train", data, "--runs-dir", str(workdir / "runs"), "--name", name, *options]) == 0
        assert cnnlab(["export", str(run)]) == 0
    return run


def _photo_folder(workdir: Path, per_class: int) -> Path:
    source = PHOTOS if PHOTOS.is_dir() else dataset("imagenette_sub")
    folder = workdir / "photos"
    if not folder.is_dir():
        for klass in sorted((source / "train").iterdir())[:3]:
            (folder / klass.name).mkdir(parents=True)
            for photo in sorted(klass.iterdir())[:per_class]:
                (folder / klass.name / photo.name).symlink_to(photo)
    return folder


def burst(server: Server, body: bytes, kind: str, requests: int) -> dict[str, float]:
    """``requests`` POSTs of one image from CLIENTS threads: req/s, p50/p99 ms, errors, mean batch."""
    latencies: list[float] = []
    errors: list[str] = []
    _, before = request(server.url, path="/health")

    def client(count: int) -> None:
        connection = http.client.HTTPConnection(server.url.split("//")[1], timeout=60)
        try:
            for _ in range(count):
                sent = time.perf_counter()
                status, reply = request(
                    server.url, "POST", "/predict", body, {"Content-Type": kind}, connection=connection
                )
                latencies.append(time.perf_counter() - sent)
                if status != 200:
                    errors.append(f"{status}: {reply}")
        except OSError as exc:
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(requests // CLIENTS,)) for _ in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - started
    _, after = request(server.url, path="/health")
    images = after["batching"]["images"] - before["batching"]["images"]
    batches = after["batching"]["batches"] - before["batching"]["batches"]
    ordered = sorted(latencies)
    return {
        "req_s": len(latencies) / took,
        "p50": 1000 * statistics.median(ordered),
        "p99": 1000 * ordered[max(0, int(0.99 * len(ordered)) - 1)],
        "errors": len(errors),
        "batch": images / max(1, batches),
    }


def measure(run: Path, image: Path, requests: int, rounds: int) -> dict[tuple[str, int], list[dict[str, float]]]:
    body, kind = multipart([(image.name, image.read_bytes())])
    servers = {
        v: start_server(run, "--runtime", v[0], "--batching", "on" if v[1] > 1 else "off", "--max-batch", str(v[1]))
        for v in VARIANTS
    }
    results: dict[tuple[str, int], list[dict[str, float]]] = {v: [] for v in VARIANTS}
    try:
        for server in servers.values():  # warm-up: first calls allocate and tune
            burst(server, body, kind, CLIENTS * 2)
        for number in range(rounds):
            order = VARIANTS[number % len(VARIANTS) :] + VARIANTS[: number % len(VARIANTS)]
            for variant in order:
                results[variant].append(burst(servers[variant], body, kind, requests))
                print(f"{run.name} round {number + 1} {variant}: {json.dumps(results[variant][-1])}", flush=True)
    finally:
        for server in servers.values():
            server.stop(wait=False)
        for server in servers.values():  # their exits take CPU: over before anything else is timed
            server.stop()
    return results


def model_timing(run: Path) -> dict[str, tuple[float, float]]:
    """Per runtime, (ms per image alone, in a batch of 8): what ``--batching auto`` measures at start."""
    import torch

    from cnnlab.serving.model import open_served

    torch.set_num_threads(1)
    return {
        runtime: open_served(run, runtime, threads=1).batch_timing(8, budget_s=6) for runtime in ("pytorch", "onnx")
    }


def table(
    name: str, results: dict[tuple[str, int], list[dict[str, float]]], timing: dict[str, tuple[float, float]]
) -> tuple[list[str], dict[str, float]]:
    rows = [
        "| runtime | batching | req/s | p50 ms | p99 ms | mean images per call | errors | req/s vs one at a time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ratios = {}
    med = {
        v: {k: statistics.median(r[k] for r in rs) for k in rs[0]} | {"errors": sum(r["errors"] for r in rs)}
        for v, rs in results.items()
    }
    for runtime, max_batch in VARIANTS:
        m = med[(runtime, max_batch)]
        ratio = m["req_s"] / med[(runtime, 1)]["req_s"]
        ratios[runtime] = med[(runtime, 16)]["req_s"] / med[(runtime, 1)]["req_s"]
        label = RUNTIME_NAMES[runtime]
        rows.append(
            f"| {label} | {'on (max 16)' if max_batch > 1 else 'off (1 per call)'} | {m['req_s']:.0f} | "
            f"{m['p50']:.0f} | {m['p99']:.0f} | {m['batch']:.1f} | {int(m['errors'])} | {ratio:.2f}x |"
        )
    ratios["p99_on"] = max(med[(r, 16)]["p99"] for r in ("pytorch", "onnx"))
    notes = [
        f"- the model alone, 1 thread, blank images: {RUNTIME_NAMES[r]} {one:.2f} ms per image one at a time, "
        f"{eight:.2f} ms per image in a batch of 8 ({one / eight:.2f}x); `--batching auto` turns batching "
        f"{'on' if eight <= BATCHING_GAIN * one else 'off'}"
        for r, (one, eight) in timing.items()
    ]
    return [f"**{name}**", "", *rows, "", *notes, ""], ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds: a smoke run")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    mnist = _train(args.workdir, "mnist", "mnist-sample", "--model", "simple_cnn", "--epochs", "1")
    photos = _photo_folder(args.workdir, 20)
    lite0 = _train(
        args.workdir,
        "lite0",
        str(photos),
        "--model",
        "efficientnet_lite0",
        "--pretrained",
        "--image-size",
        "224",
        "--stages",
        "frozen",
        "--epochs",
        "1",
        "--val-split",
        "6",
    )
    digit = _first_image(Path("/work/scratch/data/mnist"), "mnist", "test/7")
    photo = _first_image(PHOTOS, "imagenette_sub", "test/n03888257")  # a parachute: 224x224 JPEG
    requests, rounds = (160, 1) if quick else (CLIENTS * 30, 3)
    pages, goals, timings = [], {}, {}
    for name, run, image, count in (
        ("MNIST simple_cnn, 28 px PNG digit", mnist, digit, requests * 2),
        ("EfficientNet-Lite0, 224 px, a 224x224 JPEG photo", lite0, photo, requests),
    ):
        timings[name] = model_timing(run)
        lines, goals[name] = table(name, measure(run, image, count, rounds), timings[name])
        pages += lines
    lite = goals["EfficientNet-Lite0, 224 px, a 224x224 JPEG photo"]
    best = max(lite["pytorch"], lite["onnx"])
    verdict = "met" if best >= 2 and lite["p99_on"] < 1000 else "missed"
    summary = [
        f"**Goal** (issue #17): with batching, at least 2x the requests/s of one image at a time at 16 "
        f"clients for Lite0, p99 below 1 s. Measured: {lite['pytorch']:.2f}x with PyTorch eager, "
        f"{lite['onnx']:.2f}x with ONNX Runtime FP32, p99 with batching at most {lite['p99_on']:.0f} ms: "
        f"**{verdict}**.",
        "",
    ]
    if verdict == "missed":
        gains = ", ".join(
            f"{RUNTIME_NAMES[r]} {one / eight:.2f}x"
            for r, (one, eight) in timings["EfficientNet-Lite0, 224 px, a 224x224 JPEG photo"].items()
        )
        summary += [why(gains, lite), ""]
    write_page(
        "serve",
        "Serving: requests/s and latency under 16 clients",
        "PYTHONPATH=src python bench/bench_serve.py --workdir WORKDIR" + (" --quick" if quick else ""),
        f"`cnnlab serve` processes, 16 client threads with keep-alive connections on the same 2 cores, "
        f"{requests} requests of one image per round for Lite0 ({requests * 2} for MNIST), "
        f"{rounds} interleaved round(s), medians; 1 inference thread (the default). Latency is the "
        "client's, request sent to reply read.",
        summary + pages,
    )


def why(gains: str, lite: dict[str, float]) -> str:
    """The reason the Lite0 goal was missed, from this run's figures."""
    return (
        "Why: on this CPU, with one inference thread, Lite0 is compute-bound: the model alone scores a batch "
        f"of 8 at {gains} the per-image speed of single images, so there is no per-call cost of the model to "
        "share, and 16 clients queue behind one another whatever the batch size (p99 follows 16 / "
        f"requests-per-second). Served, PyTorch eager gained {lite['pytorch']:.2f}x all the same, probably "
        "because the server's other threads (HTTP, decoding) compete with the inference thread for Python's "
        "GIL, which eager PyTorch takes once per operator, so fewer, larger calls lose less time to them (a "
        "guess, not measured apart); ONNX Runtime runs a whole graph per call in C++ and gained "
        f"{lite['onnx']:.2f}x. `--batching auto` (the default) decides from the model-alone timing at start "
        "and so leaves batching off for Lite0; `--batching on` is worth trying for a PyTorch-served model. "
        "What would raise Lite0's requests/s here is a faster runtime (ONNX Runtime INT8: 2x ONNX Runtime "
        "FP32, bench/out/deploy.md), which `cnnlab serve RUN` picks by itself once `cnnlab quantize` and "
        "`cnnlab benchmark` have run."
    )


def _first_image(unpacked: Path, archive: str, under: str) -> Path:
    root = unpacked if unpacked.is_dir() else dataset(archive)
    return sorted((root / under).iterdir())[0]


if __name__ == "__main__":
    main()
