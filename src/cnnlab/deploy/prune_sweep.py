"""``cnnlab prune --max-drop POINTS``: the largest sparsity whose pruned, fine-tuned model stays within
POINTS of its parent's validation accuracy, with the sparsity / accuracy / latency curve.

Accuracy falls as more channels go (the least important go first), so a bisection of the grid
``SWEEP_SPARSITIES`` finds the largest sparsity within the drop in 3 pruned runs for 8 points,
rather than one run per point. Each point measured is a pruned run of its own (fine-tuned and
timed beside the parent) and a row of the sweep's table and curve; the choice is made on
validation, so the test split still scores the kept model without having picked it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.deploy.settings import SWEEP_SPARSITIES
from cnnlab.figures import new_figure, save_figure
from cnnlab.tables import Table

if TYPE_CHECKING:
    from cnnlab.deploy.prune_run import Pruned

SWEEP_TABLE = "prune_sweep"  # tables/prune_sweep.json in the kept pruned run


def val_drop(data: dict[str, Any]) -> float:
    """Points of validation accuracy a pruned model lost against its parent."""
    return 100 * (data["parent_val_accuracy"] - data["val_accuracy"])


def within(data: dict[str, Any], max_drop: float) -> bool:
    return val_drop(data) <= max_drop + 1e-9


def sweep_sparsities(
    measure: Callable[[float], Pruned], max_drop: float, grid: Sequence[float] = SWEEP_SPARSITIES
) -> Pruned:
    """Bisects ``grid`` for the largest sparsity whose pruned run (``measure(sparsity)``) keeps
    validation accuracy within ``max_drop`` points; returns that run (or, when none does, the
    least pruned one tried, with a warning) carrying the sweep's table, also saved in it with the curve."""
    points: dict[float, Pruned] = {}
    below, above = -1, len(grid)  # sparsity 0 (the parent) is within any drop; past the grid is not
    while above - below > 1:
        middle = (below + above) // 2
        point = points[grid[middle]] = measure(grid[middle])
        ok = within(point.table.data, max_drop)
        print(
            f"sweep: {grid[middle]:.0%} sparsity: validation {100 * point.table.data['val_accuracy']:.2f}% "
            f"({0.0 - val_drop(point.table.data):+.2f} points), {point.table.data['speedup_batch1']:.2f}x faster at "
            f"batch 1: {'within' if ok else 'over'} the {max_drop:g}-point drop",
            flush=True,
        )
        below, above = (middle, above) if ok else (below, middle)
    chosen = points[grid[below]] if below >= 0 else points[min(points)]
    warnings = list(chosen.warnings)
    if below < 0:
        first = points[min(points)].table.data
        warnings.insert(
            0,
            f"no sparsity of {grid[0]:.0%} or more keeps validation accuracy within {max_drop:g} "
            f"points ({grid[0]:.0%} lost {val_drop(first):.1f}): keep the original, or try a longer "
            "--finetune-budget or a larger --max-drop",
        )
    table = sweep_table(points, max_drop, chosen, warnings, found=below >= 0)
    table.save(chosen.files.tables, SWEEP_TABLE)
    draw_sweep(
        [p.table.data for p in points.values()],
        max_drop,
        chosen.table.data["requested"] if below >= 0 else None,
        chosen.files.figure("prune_sweep"),
    )
    return dataclasses.replace(chosen, warnings=warnings, sweep=table)


SWEEP_COLUMNS = [
    "sparsity",
    "removed",
    "non-zero params",
    "val accuracy (change)",
    "test accuracy",
    "batch 1 p50 ms",
    "speed-up",
    "within drop",
    "pruned run",
]


def sweep_table(
    points: dict[float, Pruned], max_drop: float, chosen: Pruned, warnings: list[str], found: bool
) -> Table:
    """One row per sparsity tried (the original first), the kept one marked."""
    first = next(iter(points.values())).table.data
    rows = [_original_row(first)]
    rows += [
        _point_row(sparsity, points[sparsity], points[sparsity] is chosen, max_drop) for sparsity in sorted(points)
    ]
    grid = ", ".join(f"{s:.0%}" for s in SWEEP_SPARSITIES)
    notes = [
        *(f"WARNING: {w}" for w in warnings),
        (
            f"the largest sparsity within {max_drop:g} points of validation accuracy, bisecting {grid}: the "
            "sparsities not shown were not needed"
        ),
        (
            "each point was pruned, fine-tuned and timed beside the original (batch-1 latency in PyTorch eager; "
            "the original's, first row, from the first point's timing)"
        ),
    ]
    data = {
        "max_drop": max_drop,
        "chosen": chosen.table.data["requested"],
        "found": found,
        "points": [points[s].table.data for s in sorted(points)],
    }
    title = f"Pruning sweep of {Path(first['from']).name}: the largest sparsity within {max_drop:g} points"
    return Table(title, SWEEP_COLUMNS, rows, notes, data)


def _original_row(first: dict[str, Any]) -> list[str]:
    """The unpruned model, as the first point measured it beside its pruned copy."""
    return [
        "original",
        "0%",
        f"{first['parent_params']:,}",
        f"{100 * first['parent_val_accuracy']:.2f}%",
        f"{100 * first['parent_test_accuracy']:.2f}%",
        f"{first['parent_ms']:.2f}",
        "1.00x",
        "",
        "",
    ]


def _point_row(sparsity: float, point: Pruned, kept: bool, max_drop: float) -> list[str]:
    """One sparsity tried: what it removed, its accuracy and change, its speed, whether it stayed within the drop."""
    data = point.table.data
    return [
        f"{sparsity:.0%}" + (" (kept)" if kept else ""),
        f"{data['achieved']:.0%}",
        f"{data['params']:,}",
        f"{100 * data['val_accuracy']:.2f}% ({0.0 - val_drop(data):+.2f})",
        f"{100 * data['final_accuracy']:.2f}%",
        f"{data['pruned_ms']:.2f}",
        f"{data['speedup_batch1']:.2f}x",
        "yes" if within(data, max_drop) else "no",
        point.files.root.name,
    ]


def draw_sweep(points: list[dict[str, Any]], max_drop: float, chosen: float | None, out: Path) -> Path:
    """Validation and test accuracy and batch-1 latency by sparsity, the allowed drop and the pick marked."""
    points = sorted(points, key=lambda p: p["requested"])
    xs = [0.0, *(100 * p["requested"] for p in points)]
    first = points[0]
    fig = new_figure(7, 4)
    ax = fig.subplots()
    ax.plot(
        xs,
        [100 * first["parent_val_accuracy"], *(100 * p["val_accuracy"] for p in points)],
        "o-",
        color="#1d6b35",
        label="validation accuracy",
    )
    ax.plot(
        xs,
        [100 * first["parent_test_accuracy"], *(100 * p["final_accuracy"] for p in points)],
        "s--",
        color="#8cbf9b",
        label="test accuracy",
    )
    ax.axhline(
        100 * first["parent_val_accuracy"] - max_drop,
        color="#b03030",
        linestyle=":",
        label=f"validation floor (drop {max_drop:g} points)",
    )
    if chosen is not None:
        ax.axvline(100 * chosen, color="#555", linewidth=0.8, label=f"kept: {chosen:.0%}")
    shown = [100 * p[k] for p in points for k in ("val_accuracy", "final_accuracy")]
    shown += [100 * first["parent_val_accuracy"], 100 * first["parent_test_accuracy"]]
    ax.set_ylim(max(0.0, min(*shown, 100 * first["parent_val_accuracy"] - max_drop) - 5), min(100.5, max(shown) + 2))
    ax.set_xlabel("sparsity (% asked to be removed)")
    ax.set_ylabel("accuracy (%)")
    latency = ax.twinx()
    # Each point was timed beside the parent in its own command: its speed-up is the fair figure, so
    # every latency is the first timing of the parent divided by the point's speed-up.
    latency.plot(
        xs,
        [first["parent_ms"], *(first["parent_ms"] / p["speedup_batch1"] for p in points)],
        "^-",
        color="#3a6ea5",
        label="batch-1 latency (ms)",
    )
    latency.set_ylabel("batch-1 latency (ms)", color="#3a6ea5")
    latency.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    more_handles, more_labels = latency.get_legend_handles_labels()
    ax.legend(handles + more_handles, labels + more_labels, loc="best", fontsize=8)
    return save_figure(fig, out, "Pruning: accuracy and latency by sparsity")
