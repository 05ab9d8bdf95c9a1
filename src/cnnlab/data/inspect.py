"""The data doctor: counts, formats, sizes, unreadable files, duplicates and leakage of a data set.

Reads each file's header (no pixel decoding, unless ``decode=True``) and hashes its bytes, so a
large folder is checked in about the time it takes to read it once.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data.decode import ImageInfo, UnreadableImage, decode_image, is_grayscale, probe_image
from cnnlab.data.discover import discover
from cnnlab.errors import plural, suggest

IMBALANCE_LIMIT = 3.0  # max/min class count above which training needs --sampler balanced or weights
MIN_PER_CLASS = 10  # fewer training images than this per class: the class will barely be learned
SPLIT_ORDER = ("train", "val", "test")


@dataclass
class FileFacts:
    """What inspection learned about one listed file."""

    path: Path
    split: str
    label: str
    format: str = ""
    mode: str = ""
    width: int = 0
    height: int = 0
    digest: str = ""  # blake2b of the bytes, for duplicates
    reason: str | None = None  # why the file is unusable, or None


@dataclass
class Inspection:
    """The per-file facts and the report built from them (a JSON-ready dict)."""

    facts: list[FileFacts]
    report: dict[str, Any]


def _examine(item: FileFacts, decode: bool) -> FileFacts:
    try:
        info = probe_image(item.path)
        if decode:  # finds truncated files, which a header does not show; small size: fast
            decode_image(item.path, channels=1 if is_grayscale(info) else 3, size=32)
        item.format, item.mode, item.width, item.height = info.format, info.mode, info.width, info.height
        item.digest = hashlib.blake2b(item.path.read_bytes(), digest_size=16).hexdigest()
    except UnreadableImage as exc:
        item.reason = exc.reason
    except OSError as exc:  # vanished or unreadable between probe and read
        item.reason = (exc.strerror or str(exc)).lower()
    return item


def _size_range(facts: list[FileFacts]) -> dict[str, str]:
    """Smallest, median and largest image by pixel count, as 'WxH'."""
    ordered = sorted(facts, key=lambda f: (f.width * f.height, f.width))
    pick = {"min": ordered[0], "median": ordered[(len(ordered) - 1) // 2], "max": ordered[-1]}
    return {name: f"{f.width}x{f.height}" for name, f in pick.items()}


def _class_stats(facts: list[FileFacts], total: int) -> dict[str, Any]:
    good = [f for f in facts if f.reason is None]
    return {
        "count": len(good),
        "share": round(len(good) / total, 4) if total else 0.0,
        "formats": dict(Counter(f.format for f in good).most_common()),
        "modes": dict(Counter(f.mode for f in good).most_common()),
        "size": _size_range(good) if good else None,
        "skipped": len(facts) - len(good),
    }


def _duplicates(good: list[FileFacts]) -> tuple[list[dict], list[dict], list[dict]]:
    """(copies within one split, contents found in several splits, contents under several labels)."""
    groups: dict[str, list[FileFacts]] = defaultdict(list)
    for f in good:
        groups[f.digest].append(f)
    within, across, conflicts = [], [], []
    for digest, members in groups.items():
        if len(members) < 2:
            continue
        entries = [{"split": f.split, "label": f.label, "path": str(f.path)} for f in members]
        # copies under one label in one split; under several labels they are conflicts
        by_place = Counter((f.split, f.label) for f in members)
        for (split, label), n in by_place.items():
            if n > 1:
                within.append({"hash": digest, "split": split, "label": label,
                               "paths": [str(f.path) for f in members if (f.split, f.label) == (split, label)]})
        if len({f.split for f in members}) > 1:
            across.append({"hash": digest, "files": entries})
        if len({f.label for f in members}) > 1:
            conflicts.append({"hash": digest, "files": entries})
    return within, across, conflicts


def _problems(report: dict[str, Any], flat: bool) -> list[str]:
    problems = []
    if report["skipped"]:
        problems.append(f"{plural(len(report['skipped']), 'file')} skipped (unreadable or not images)")
    if report["duplicates"]:
        extra = sum(len(g["paths"]) - 1 for g in report["duplicates"])
        where = "; held-out val/test may get copies" if flat else ""
        problems.append(f"{plural(extra, 'duplicate copy', 'duplicate copies')} within a split{where}")
    if report["leakage"]:
        problems.append(f"{plural(len(report['leakage']), 'image')} in more than one split (leakage)")
    if report["conflicts"]:
        problems.append(f"{plural(len(report['conflicts']), 'image')} found under different labels")
    train = report["splits"].get("train", {}).get("classes", {})
    if len(train) < 2:
        problems.append(f"{plural(len(train), 'class', 'classes')} in train; a classifier needs at least 2")
    ratio = report["imbalance"].get("train")
    if ratio is not None and ratio > IMBALANCE_LIMIT:
        problems.append(f"class imbalance {ratio:g}x in train; try --sampler balanced or --class-weights auto")
    few = [name for name, c in train.items() if c["count"] < MIN_PER_CLASS]
    if few:
        problems.append(f"fewer than {MIN_PER_CLASS} training images in class {', '.join(few[:5])}")
    for split, stats in report["splits"].items():
        missing = sorted(set(train) - {n for n, c in stats["classes"].items() if c["count"]})
        if split != "train" and missing:
            problems.append(f"{split} lacks class {', '.join(missing[:5])}")
        unknown = sorted(set(stats["classes"]) - set(train)) if split != "train" else []
        problems.extend(f"{split} has class {name}, which train lacks{suggest(name, train)}" for name in unknown)
    return problems


def inspect_data(source: Path, workers: int = 4, decode: bool = False) -> Inspection:
    """Examines every file of a folder or CSV listing (see ``discover``) and reports on it.

    Raises:
        CnnlabError: when ``source`` is missing or holds no class folders.
    """
    listing = discover(Path(source))
    items = [FileFacts(path, split, label) for split in SPLIT_ORDER for path, label in listing.files.get(split, [])]
    chunks = [items[i : i + 64] for i in range(0, len(items), 64)]  # one task per 64 files, not per file
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        facts = [f for chunk in pool.map(lambda c: [_examine(f, decode) for f in c], chunks) for f in chunk]
    splits: dict[str, Any] = {}
    imbalance: dict[str, float] = {}
    for split in SPLIT_ORDER:
        members = [f for f in facts if f.split == split]
        if not members:
            continue
        total = sum(f.reason is None for f in members)
        by_class: dict[str, list[FileFacts]] = defaultdict(list)
        for f in members:
            by_class[f.label].append(f)
        classes = {name: _class_stats(by_class[name], total) for name in sorted(by_class)}
        splits[split] = {"count": total, "classes": classes}
        counts = [c["count"] for c in classes.values()]
        if counts:
            imbalance[split] = round(max(counts) / min(counts), 2) if min(counts) else float("inf")
    good = [f for f in facts if f.reason is None]
    within, across, conflicts = _duplicates(good)
    skipped = [{"path": str(p), "split": "", "label": "", "reason": r} for p, r in listing.ignored]
    skipped += [{"path": str(f.path), "split": f.split, "label": f.label, "reason": f.reason}
                for f in facts if f.reason is not None]
    report: dict[str, Any] = {
        "source": str(source),
        "layout": listing.layout,
        "checked": "headers and decoding" if decode else "headers only (--decode also finds truncated files)",
        "images": len(good),
        "splits": splits,
        "imbalance": imbalance,
        "skipped": skipped,
        "duplicates": within,
        "leakage": across,
        "conflicts": conflicts,
    }
    report["problems"] = _problems(report, flat=report["layout"] == "flat")
    n = len(report["problems"])
    report["verdict"] = "OK" if not n else f"{plural(n, 'problem')}: " + "; ".join(report["problems"])
    return Inspection(facts, report)


def sample_images(
    inspection: Inspection, per_class: int = 8, size: int | None = None
) -> tuple[np.ndarray, list[int], list[str]]:
    """First usable training images of each class as (N, C, size, size) uint8, for a grid.

    ``size`` defaults to the median shorter side, at most 64: small images are not blown up.
    """
    good = [f for f in inspection.facts if f.split == "train" and f.reason is None]
    if size is None:
        size = min(64, int(np.median([min(f.width, f.height) for f in good]))) if good else 64
    class_names = sorted({f.label for f in good})
    gray = all(is_grayscale(ImageInfo(f.format, f.mode, f.width, f.height)) for f in good)
    channels = 1 if gray else 3
    images, labels = [], []
    for index, name in enumerate(class_names):
        taken = 0
        for f in (f for f in good if f.label == name):
            if taken == per_class:
                break
            try:
                images.append(decode_image(f.path, channels=channels, size=size).transpose(2, 0, 1))
            except UnreadableImage:
                continue  # truncated: the header looked fine
            labels.append(index)
            taken += 1
    stacked = np.stack(images) if images else np.zeros((0, channels, size, size), np.uint8)
    return stacked, labels, class_names


def write_inspection_figures(inspection: Inspection, out_dir: Path) -> list[Path]:
    """``samples.png`` (a few images per class) and ``class_counts.png`` (images per class and split)."""
    from cnnlab.figures import plot_class_counts, plot_samples_per_class

    images, labels, names = sample_images(inspection)
    counts = {s: {n: c["count"] for n, c in st["classes"].items()} for s, st in inspection.report["splits"].items()}
    return [plot_samples_per_class(images, labels, names, Path(out_dir) / "samples.png"),
            plot_class_counts(counts, Path(out_dir) / "class_counts.png")]
