"""Stage-2 candidates for EfficientNet-Lite0 fine-tuning, compared from one stage-1 model per data set.

    PYTHONPATH=src python bench/finetune_search.py DATA [DATA ...] --threads 1

For each data folder (a user's layout: ``train/<class>/`` and ``test/<class>/``; cnnlab holds
validation out of train as ``--val-split`` says): one pass of the frozen backbone up to the lowest
cut any candidate needs (activations cached in memory), stage 1 as cnnlab runs it (head on pooled
features, Adam 1e-3, ReduceLROnPlateau, early stopping on val loss, best restored), then every
stage-2 candidate from the same stage-1 weights, on cached activations at its own cut (the top
only, as ``cnnlab.training.activation_cache`` trains it), with cnnlab's optimisers and schedules. Per
epoch: validation loss and accuracy, test accuracy (off the clock). Summary: for
each rule of ``select`` (stage 1 is epoch 0), the test change of the model it keeps, mean over seeds.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cnnlab.config import build_config  # noqa: E402
from cnnlab.data.loaders import EpochBatches  # noqa: E402
from cnnlab.data.normalize import Normalize  # noqa: E402
from cnnlab.models.cut import Cut, cut_below_trainable  # noqa: E402
from cnnlab.models.freeze import freeze_backbone, param_groups, set_frozen_bn_eval  # noqa: E402
from cnnlab.models.freeze import unfreeze_last_blocks, unfreeze_last_layers  # noqa: E402
from cnnlab.models.heads import head_forward  # noqa: E402
from cnnlab.models.inference import run_batches  # noqa: E402
from cnnlab.training.build import build_model, preprocess_of  # noqa: E402
from cnnlab.training.optim import apply_speedups, build_optimizer, build_scheduler  # noqa: E402

from common import load_data  # noqa: E402

BATCH = 128


@dataclasses.dataclass(frozen=True)
class Candidate:
    name: str
    layers: int | None = 10
    blocks: int | None = None
    lr: float = 1e-5
    scheduler: str = "plateau"
    epochs: int = 3
    layer_decay: float | None = None
    optimizer: str = "adam"
    weight_decay: float = 0.0
    label_smoothing: float = 0.0  # training loss only: validation loss stays plain cross-entropy


CANDIDATES = {
    "lesson": Candidate("lesson: 10 layers, 1e-5, plateau, 3 ep"),
    "l10-1e5-10": Candidate("10 layers, 1e-5, plateau, 10 ep", epochs=10),
    "l10-1e4-oc5": Candidate("10 layers, 1e-4, onecycle, 5 ep", lr=1e-4, scheduler="onecycle", epochs=5),
    "b2-3e4-oc5": Candidate(
        "2 blocks, 3e-4, onecycle, 5 ep", layers=None, blocks=2, lr=3e-4, scheduler="onecycle", epochs=5
    ),
    "b3-1e4-oc5": Candidate(
        "3 blocks, 1e-4, onecycle, 5 ep", layers=None, blocks=3, lr=1e-4, scheduler="onecycle", epochs=5
    ),
    "b3-3e4-oc5": Candidate(
        "3 blocks, 3e-4, onecycle, 5 ep", layers=None, blocks=3, lr=3e-4, scheduler="onecycle", epochs=5
    ),
    "b3-1e3-oc5": Candidate(
        "3 blocks, 1e-3, onecycle, 5 ep", layers=None, blocks=3, lr=1e-3, scheduler="onecycle", epochs=5
    ),
    "b6-3e4-oc5": Candidate(
        "6 blocks, 3e-4, onecycle, 5 ep", layers=None, blocks=6, lr=3e-4, scheduler="onecycle", epochs=5
    ),
    "b6-3e4-ld-oc5": Candidate(
        "6 blocks, 3e-4, decay 0.8, onecycle, 5 ep",
        layers=None,
        blocks=6,
        lr=3e-4,
        scheduler="onecycle",
        epochs=5,
        layer_decay=0.8,
    ),
    "b9-3e4-ld-oc5": Candidate(
        "9 blocks, 3e-4, decay 0.8, onecycle, 5 ep",
        layers=None,
        blocks=9,
        lr=3e-4,
        scheduler="onecycle",
        epochs=5,
        layer_decay=0.8,
    ),
    "b3-3e4-oc10": Candidate(
        "3 blocks, 3e-4, onecycle, 10 ep", layers=None, blocks=3, lr=3e-4, scheduler="onecycle", epochs=10
    ),
    "b3-1e4-oc5-ls1": Candidate(
        "3 blocks, 1e-4, onecycle, 5 ep, smoothing 0.1",
        layers=None,
        blocks=3,
        lr=1e-4,
        scheduler="onecycle",
        epochs=5,
        label_smoothing=0.1,
    ),
    "b3-3e4-oc5-ls1": Candidate(
        "3 blocks, 3e-4, onecycle, 5 ep, smoothing 0.1",
        layers=None,
        blocks=3,
        lr=3e-4,
        scheduler="onecycle",
        epochs=5,
        label_smoothing=0.1,
    ),
    "b3-3e4-oc8-ls1": Candidate(
        "3 blocks, 3e-4, onecycle, 8 ep, smoothing 0.1",
        layers=None,
        blocks=3,
        lr=3e-4,
        scheduler="onecycle",
        epochs=8,
        label_smoothing=0.1,
    ),
    "b6-1e3-ld-oc5": Candidate(
        "6 blocks, 1e-3, decay 0.7, onecycle, 5 ep",
        layers=None,
        blocks=6,
        lr=1e-3,
        scheduler="onecycle",
        epochs=5,
        layer_decay=0.7,
    ),
}


def set_trainable(model: torch.nn.Module, cand: Candidate) -> None:
    freeze_backbone(model)
    if cand.blocks is not None:
        unfreeze_last_blocks(model, cand.blocks)
    else:
        unfreeze_last_layers(model, cand.layers or 0)
    model.train()
    set_frozen_bn_eval(model, include_trainable=True)


class Activations:
    """Activations of every split at any cut at or above the lowest one, derived on demand."""

    def __init__(self, model: torch.nn.Module, lowest: Cut, data: Any, normalize: Normalize) -> None:
        self.model, self.lowest, self.labels = model, lowest, {k: v.labels for k, v in data.splits.items()}
        started = time.perf_counter()
        self.at: dict[str, dict[str, torch.Tensor]] = {
            lowest.where: {
                split: torch.cat(
                    [z for _, z in run_batches(model, s.images, normalize, lambda m, x: lowest.bottom_forward(x))]
                )
                for split, s in data.splits.items()
            }
        }
        self.extract_seconds = time.perf_counter() - started
        self.names = [n for n, _ in self._chain()]

    def _chain(self) -> list[tuple[str, torch.nn.Module]]:
        from cnnlab.models.cut import feature_chain

        return feature_chain(self.model)

    def get(self, where: str) -> dict[str, torch.Tensor]:
        if where not in self.at:
            chain = self._chain()
            names = [n for n, _ in chain]
            start, stop = names.index(self.lowest.where), names.index(where) if where in names else len(names)
            between = torch.nn.Sequential(*[m for _, m in chain[start:stop]]).eval()
            with torch.inference_mode():
                parts = {
                    k: [
                        between(v[i : i + 64].contiguous(memory_format=torch.channels_last))
                        for i in range(0, len(v), 64)
                    ]
                    for k, v in self.at[self.lowest.where].items()
                }
            self.at[where] = {k: torch.cat(v) for k, v in parts.items()}  # outside inference mode: trainable inputs
        return self.at[where]


def evaluate(forward, z: torch.Tensor, labels: torch.Tensor, model: torch.nn.Module) -> tuple[float, float]:
    was = [(m, m.training) for m in model.modules()]
    model.eval()
    with torch.inference_mode():
        logits = torch.cat([forward(z[i : i + 256]) for i in range(0, len(z), 256)])
    for m, t in was:
        m.training = t
    return float(F.cross_entropy(logits, labels)), float((logits.argmax(1) == labels).float().mean())


def fit_loop(
    model,
    forward,
    z: dict[str, torch.Tensor],
    labels,
    params,
    cfg,
    epochs: int,
    seed: int,
    patience: int = 5,
    restore_modes=None,
    label_smoothing: float = 0.0,
) -> dict[str, Any]:
    """cnnlab's stage loop: optimiser and schedule from ``cfg``, early stopping, best val loss kept."""
    optimizer = build_optimizer(params, cfg, cfg.lr)
    steps_per_epoch = -(-len(labels["train"]) // BATCH)
    sched = build_scheduler(optimizer, cfg, steps_per_epoch * epochs)
    sampler = EpochBatches(labels["train"], BATCH, shuffle=True, seed=seed)
    history = []
    v0 = evaluate(forward, z["val"], labels["val"], model)
    t0 = evaluate(forward, z["test"], labels["test"], model)
    history.append({"epoch": 0, "val_loss": v0[0], "val_acc": v0[1], "test_acc": t0[1], "seconds": 0.0})
    best, best_state, bad, clock = v0[0], copy.deepcopy(model.state_dict()), 0, 0.0
    for epoch in range(epochs):
        started = time.perf_counter()
        restore_modes()
        sampler.set_epoch(epoch)
        for positions in sampler:
            idx = torch.as_tensor(positions)
            loss = F.cross_entropy(forward(z["train"][idx]), labels["train"][idx], label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if sched and sched["interval"] == "step":
                sched["scheduler"].step()
        val = evaluate(forward, z["val"], labels["val"], model)
        if sched and sched["interval"] == "epoch":
            sched["scheduler"].step(val[0])
        clock += time.perf_counter() - started
        test = evaluate(forward, z["test"], labels["test"], model)  # off the clock
        history.append(
            {"epoch": epoch + 1, "val_loss": val[0], "val_acc": val[1], "test_acc": test[1], "seconds": clock}
        )
        if val[0] < best:
            best, bad, best_state = val[0], 0, copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= patience:
                break
    model.load_state_dict(best_state)
    return {"history": history, "seconds": clock}


def select(hist: list[dict], rule: str, val_images: int) -> dict:
    """The history entry (epoch 0 = stage 1) a selection ``rule`` keeps; validation figures only.

    ``loss``: the lowest validation loss (``--finetune-select loss``); ``acc``: the most images right,
    then the lowest loss, no margin; ``last``: stage 2's last epoch if it gets more right than stage 1
    (or as many with a lower loss); ``cnnlab``: ``--finetune-select accuracy``, with cnnlab's own
    functions (``cnnlab.training.selection``): the best epoch on accuracy, kept over stage 1 only with
    more than one more image right, or one more with a lower loss.
    """
    from cnnlab.training.selection import score_to_beat, select_score

    first = hist[0]
    errors = lambda h: val_images - round(h["val_acc"] * val_images)  # noqa: E731
    if rule == "loss":
        return min(hist, key=lambda h: h["val_loss"])
    if rule == "acc":
        return min(hist, key=lambda h: (errors(h), h["val_loss"]))
    if rule == "last":
        last = hist[-1]
        better = errors(last) < errors(first) or (
            errors(last) == errors(first) and last["val_loss"] < first["val_loss"]
        )
        return last if better else first
    best = min(hist[1:], key=lambda h: select_score(errors(h), h["val_loss"], "accuracy"))
    stage1 = {"val_at_best": {"errors": errors(first), "loss": first["val_loss"]}}
    return (
        best if select_score(errors(best), best["val_loss"], "accuracy") < score_to_beat(stage1, "accuracy") else first
    )


RULES = ["loss", "acc", "last", "cnnlab"]


def run_data(folder: str, keys: list[str], seeds: list[int], val_split: str, image_size: int | None) -> dict:
    overrides: dict[str, Any] = {
        "data": folder,
        "model": "efficientnet_lite0",
        "pretrained": True,
        "val_split": val_split,
    }
    if image_size:
        overrides["image_size"] = image_size
    config = build_config(**overrides)
    data = load_data(config)
    sizes = {k: len(v) for k, v in data.splits.items()}
    print(f"{folder}: {sizes}, val split {val_split}", flush=True)
    preprocess = preprocess_of(data, config)
    torch.manual_seed(0)
    model = apply_speedups(build_model(config, data.num_classes, preprocess), config.train)
    normalize = Normalize(preprocess.mean, preprocess.std)
    labels = {k: v.labels for k, v in data.splits.items()}
    lowest_blocks = max(c.blocks or 0 for c in (CANDIDATES[k] for k in keys)) or 3
    set_trainable(model, Candidate("lowest", layers=None, blocks=max(lowest_blocks, 3)))
    sample = normalize(Normalize.to_unit(data.splits["train"].images[:4]))
    lowest, why = cut_below_trainable(model, sample)
    assert lowest is not None, why
    acts = Activations(model, lowest, data, normalize)
    print(
        f"  activations at {lowest.where}: {acts.extract_seconds:.0f} s, "
        f"{sum(v.numel() * 4 for v in acts.at[lowest.where].values()) / 2**20:.0f} MiB",
        flush=True,
    )
    # Stage 1 on pooled features, as cnnlab trains it (cnnlab.training.stage_plan: frozen stage).
    freeze_backbone(model)
    model.train()
    set_frozen_bn_eval(model)
    pooled_at = acts.get("the pooling")
    with torch.inference_mode():
        pooled = {k: model.global_pool(v).clone() for k, v in pooled_at.items()}
    pooled = {k: v.clone() for k, v in pooled.items()}
    stage1_cfg = dataclasses.replace(config.train, lr=1e-3)
    started = time.perf_counter()
    torch.set_num_threads(1)
    result1 = fit_loop(
        model,
        lambda f: head_forward(model, f),
        pooled,
        labels,
        [p for p in model.parameters() if p.requires_grad],
        stage1_cfg,
        50,
        42,
        restore_modes=lambda: (model.train(), set_frozen_bn_eval(model)),
    )
    torch.set_num_threads(THREADS)
    stage1_seconds = time.perf_counter() - started
    best1 = min(result1["history"], key=lambda h: h["val_loss"])
    print(
        f"  stage 1: test {best1['test_acc']:.4f} val {best1['val_acc']:.4f} (epoch {best1['epoch']}, "
        f"{stage1_seconds:.1f} s)",
        flush=True,
    )
    stage1_state = copy.deepcopy(model.state_dict())
    out = {
        "folder": folder,
        "sizes": sizes,
        "val_split": val_split,
        "stage1": best1,
        "extract_seconds": acts.extract_seconds,
        "candidates": {},
    }
    for key in keys:
        cand = CANDIDATES[key]
        runs = []
        for seed in seeds:
            model.load_state_dict(stage1_state)
            set_trainable(model, cand)
            cut, why = cut_below_trainable(model, sample)
            assert cut is not None, why
            z = acts.get(cut.where)
            cfg = dataclasses.replace(
                config.train,
                lr=cand.lr,
                scheduler=cand.scheduler,
                optimizer=cand.optimizer,
                weight_decay=cand.weight_decay,
            )
            torch.manual_seed(seed)
            groups = param_groups(model, cand.lr, cand.layer_decay, cand.weight_decay)
            result = fit_loop(
                model,
                cut.top_forward,
                z,
                labels,
                groups,
                cfg,
                cand.epochs,
                seed,
                restore_modes=lambda: (model.train(), set_frozen_bn_eval(model, include_trainable=True)),
                label_smoothing=cand.label_smoothing,
            )
            hist = result["history"]
            chosen = min(hist, key=lambda h: h["val_loss"])
            runs.append(
                {"seed": seed, "cut": cut.where, "history": hist, "chosen": chosen, "seconds": result["seconds"]}
            )
            print(
                f"  {cand.name} seed {seed}: cut {cut.where}, last test {hist[-1]['test_acc']:.4f}, "
                f"best-by-val epoch {chosen['epoch']} test {chosen['test_acc']:.4f}, max test "
                f"{max(h['test_acc'] for h in hist):.4f}, {result['seconds']:.1f} s",
                flush=True,
            )
        out["candidates"][key] = runs
    return out


THREADS = 1


def main() -> int:
    global THREADS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="*")
    p.add_argument("--candidates", nargs="+", default=list(CANDIDATES))
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--val-split", default="0.1")
    p.add_argument("--image-size", type=int)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="bench/out/finetune_search.json")
    p.add_argument("--summary-only", action="store_true", help="summarise OUT's saved results again")
    args = p.parse_args()
    if args.summary_only:
        summarize(json.loads(Path(args.out).read_text()))
        return 0
    THREADS = args.threads
    torch.set_num_threads(args.threads)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    results = []
    for folder in args.data:  # saved after each folder: an interrupted search keeps what it did
        results.append(run_data(folder, args.candidates, args.seeds, args.val_split, args.image_size))
        Path(args.out).write_text(json.dumps(results, indent=1))
    summarize(results)
    return 0


def summarize(results: list[dict]) -> None:
    """Per data set and candidate: mean test change against stage 1 under each selection rule."""
    for r in results:
        val_images = r["sizes"]["val"]
        print(
            f"\n{r['folder']} stage 1 test {r['stage1']['test_acc']:.4f}, {val_images} validation images; "
            f"test change (points) of the model each rule keeps, mean over seeds [kept stage 2 in n of seeds]"
        )
        print(f"  {'candidate':50s} " + " ".join(f"{rule:>14s}" for rule in RULES) + "   max test  seconds")
        for key, runs in r["candidates"].items():
            cells = []
            for rule in RULES:
                chosen = [select(run["history"], rule, val_images) for run in runs]
                change = statistics.mean(
                    100 * (c["test_acc"] - run["history"][0]["test_acc"]) for c, run in zip(chosen, runs)
                )
                cells.append(f"{change:+6.2f} [{sum(c['epoch'] > 0 for c in chosen)}/{len(runs)}]")
            best = statistics.mean(
                100 * (max(h["test_acc"] for h in run["history"]) - run["history"][0]["test_acc"]) for run in runs
            )
            print(
                f"  {CANDIDATES[key].name:50s} "
                + " ".join(f"{c:>14s}" for c in cells)
                + f"  {best:+7.2f}  {statistics.mean(run['seconds'] for run in runs):6.0f}"
            )


if __name__ == "__main__":
    sys.exit(main())
