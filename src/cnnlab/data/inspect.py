"""The data doctor: counts, formats, sizes, unreadable files, blank images, copies and leakage of a data set.

Reads each file once: its header, a digest of its bytes (exact copies) and a small preview decoded from
the same bytes (truncated files, blank or placeholder images, and the perceptual hash that finds near
copies: :mod:`cnnlab.data.similar`). Copies are grouped: within a class, across splits (leakage) and
across labels (conflicts).
"""

from __future__ import annotations

import hashlib
import io
import textwrap
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data.decode import ImageInfo, UnreadableImage, decode_image, decode_preview, is_grayscale, probe_image
from cnnlab.data.discover import discover
from cnnlab.data.similar import Copy, Look, blank_reason, copy_groups, look_at, same_pictures, typical_entropy
from cnnlab.errors import suggest

IMBALANCE_LIMIT = 3.0  # max/min class count above which training needs --sampler balanced or weights
MIN_PER_CLASS = 10  # fewer training images than this per class: the class will barely be learned
SPLIT_ORDER = ("train", "val", "test")
PREVIEW = 128  # px, the longer side of the picture each file is looked at as
FIGURE_ROWS = 12  # findings drawn in suspects.png; --format json lists them all


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
    look: Look | None = None  # perceptual hash and content of its preview
    reason: str | None = None  # why the file is unusable, or None


@dataclass
class Inspection:
    """The per-file facts and the report built from them (a JSON-ready dict)."""

    facts: list[FileFacts]
    report: dict[str, Any]


def _examine(item: FileFacts) -> FileFacts:
    try:
        info = probe_image(item.path)
        data = item.path.read_bytes()
        # decoding the whole stream (small) also finds truncated files, which a header does not show
        item.look = look_at_preview(io.BytesIO(data))
        item.format, item.mode, item.width, item.height = info.format, info.mode, info.width, info.height
        item.digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    except UnreadableImage as exc:
        item.reason = exc.reason
    except OSError as exc:  # vanished or unreadable between probe and read
        item.reason = (exc.strerror or str(exc)).lower()
    return item


def look_at_preview(source: Path | io.BytesIO) -> Look:
    """The :class:`Look` of an image file, from its preview (raises UnreadableImage)."""
    return look_at(decode_preview(source, PREVIEW))


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


def _entry(f: FileFacts, copy: Copy | None) -> dict[str, Any]:
    """One file of a group of copies: where it is, and how it matches the group's first file."""
    reason = "the first of the group" if copy is None else copy.reason
    return {
        "split": f.split,
        "label": f.label,
        "path": str(f.path),
        "bits": 0 if copy is None else copy.bits,
        "reason": reason,
    }


def _group_reason(members: list[FileFacts], copies: list[Copy | None]) -> str:
    labels = sorted({f.label for f in members})
    bits = max(c.bits for c in copies if c is not None)
    kind = (
        "exact copies"
        if all(c is None or c.exact for c in copies)
        else f"near copies (perceptual hash up to {bits} of 64 bits apart)"
        if bits
        else "near copies (the same perceptual hash, other bytes)"
    )
    if len(members) >= 3 and len(labels) >= 2:  # one picture filed everywhere: a placeholder, a logo
        return f"{kind}: one picture in {len(members)} files under {len(labels)} labels (a placeholder?)"
    return kind


def _duplicates(good: list[FileFacts]) -> tuple[list[dict], list[dict], list[dict], list[str]]:
    """(copies within one split and label, pictures found in several splits, pictures under several labels,
    notes): exact copies by digest, near copies by perceptual hash."""
    looks = [f.look for f in good if f.look is not None]
    assert len(looks) == len(good), "every readable file has a look"
    copies, note = same_pictures(looks, [f.digest for f in good])
    link = {c.second: c for c in copies}  # each group's later members, linked to an earlier one
    within, across, conflicts = [], [], []
    for group in copy_groups(len(good), [(c.first, c.second, c.bits) for c in copies]):
        members = [good[i] for i in group]
        to_first = [None] + [_to_first(group[0], i, link, good) for i in group[1:]]
        entries = [_entry(f, c) for f, c in zip(members, to_first)]
        reason = _group_reason(members, to_first)
        by_place = Counter((f.split, f.label) for f in members)
        for (split, label), n in by_place.items():
            if n > 1:
                within.append(
                    {
                        "reason": reason,
                        "split": split,
                        "label": label,
                        "paths": [str(f.path) for f in members if (f.split, f.label) == (split, label)],
                    }
                )
        if len({f.split for f in members}) > 1:
            across.append({"reason": reason, "files": entries})
        if len({f.label for f in members}) > 1:
            conflicts.append({"reason": reason, "files": entries})
    return within, across, conflicts, [note] if note else []


def _to_first(first: int, index: int, link: dict[int, Copy], good: list[FileFacts]) -> Copy:
    """How file ``index`` matches its group's first file: directly when they are one pair, else measured."""
    direct = link.get(index)
    if direct is not None and direct.first == first:
        return direct
    a, b = good[first], good[index]
    assert a.look is not None and b.look is not None
    return Copy(first, index, (a.look.phash ^ b.look.phash).bit_count(), a.digest == b.digest)


def _near_blank(good: list[FileFacts]) -> list[dict[str, Any]]:
    """Blank and near-blank images (placeholders, not photos of their class), each with its reason."""
    typical = typical_entropy([f.look for f in good if f.look is not None])
    found = []
    for f in good:
        reason = blank_reason(f.look, typical) if f.look is not None else None
        if reason is not None:
            found.append({"split": f.split, "label": f.label, "path": str(f.path), "reason": reason})
    return found


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _problems(report: dict[str, Any], flat: bool) -> list[str]:
    problems = []
    if report["skipped"]:
        problems.append(f"{_n(len(report['skipped']), 'file')} skipped (unreadable or not images)")
    if report["near_blank"]:
        problems.append(
            f"{_n(len(report['near_blank']), 'blank or near-blank image')} (placeholders, not "
            "pictures of their class): delete them or move them out of the class folders"
        )
    if report["duplicates"]:
        extra = sum(len(g["paths"]) - 1 for g in report["duplicates"])
        where = "; held-out val/test may get copies" if flat else ""
        problems.append(
            f"{_n(extra, 'duplicate copy')} within a split{where}".replace("copys", "copies") + ": keep one of each"
        )
    if report["leakage"]:
        problems.append(
            f"{_n(len(report['leakage']), 'image')} in more than one split (leakage): delete the "
            "copies from val/test, or the test score is inflated"
        )
    if report["conflicts"]:
        problems.append(
            f"{_n(len(report['conflicts']), 'image')} found under different labels: keep the one "
            "with the right label, delete the others"
        )
    train = report["splits"].get("train", {}).get("classes", {})
    if len(train) < 2:
        problems.append(f"{len(train)} class(es) in train; a classifier needs at least 2")
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

    Every file is decoded (a small preview): ``decode`` is kept for old callers and changes nothing.

    Raises:
        CnnlabError: when ``source`` is missing or holds no class folders.
    """
    listing = discover(Path(source))
    items = [FileFacts(path, split, label) for split in SPLIT_ORDER for path, label in listing.files.get(split, [])]
    chunks = [items[i : i + 64] for i in range(0, len(items), 64)]  # one task per 64 files, not per file
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        facts = [f for chunk in pool.map(lambda c: [_examine(f) for f in c], chunks) for f in chunk]
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
    within, across, conflicts, notes = _duplicates(good)
    skipped = [{"path": str(p), "split": "", "label": "", "reason": r} for p, r in listing.ignored]
    skipped += [
        {"path": str(f.path), "split": f.split, "label": f.label, "reason": f.reason}
        for f in facts
        if f.reason is not None
    ]
    report: dict[str, Any] = {
        "source": str(source),
        "layout": listing.layout,
        "checked": f"every image decoded ({PREVIEW} px preview): exact copies by bytes, near copies by perceptual hash",
        "images": len(good),
        "splits": splits,
        "imbalance": imbalance,
        "skipped": skipped,
        "near_blank": _near_blank(good),
        "duplicates": within,
        "leakage": across,
        "conflicts": conflicts,
        "notes": notes,
    }
    report["problems"] = _problems(report, flat=report["layout"] == "flat")
    n = len(report["problems"])
    report["verdict"] = "OK" if not n else f"{n} problem{'s' if n > 1 else ''}: " + "; ".join(report["problems"])
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


def findings(report: dict[str, Any]) -> list[tuple[list[dict[str, Any]], str]]:
    """The doctor's findings about pictures, one per group of copies or lone blank image: (files, reason)."""
    blank = {f["path"]: f["reason"] for f in report["near_blank"]}
    rows: list[tuple[list[dict[str, Any]], str]] = []
    shown: set[str] = set()  # a group under two labels and in two splits is drawn once

    def add(files: list[dict[str, Any]], reason: str) -> None:
        paths = {f["path"] for f in files}
        if not paths <= shown:
            shown.update(paths)
            also = next((blank[f["path"]] for f in files if f["path"] in blank), None)
            rows.append((files, reason if also is None else f"{reason}; {also}"))

    for kind, groups in (("under different labels", report["conflicts"]), ("in several splits", report["leakage"])):
        for group in groups:
            add(group["files"], f"{kind}: {group['reason']}")
    for group in report["duplicates"]:
        add(
            [{"split": group["split"], "label": group["label"], "path": p} for p in group["paths"]],
            f"copies in one class: {group['reason']}",
        )
    return rows + [([f], f["reason"]) for f in report["near_blank"] if f["path"] not in shown]


def _tile(path: str, side: int) -> np.ndarray:
    """A file's whole picture letterboxed into a white side x side square, (H, W, 3) floats in [0, 1]."""
    tile = np.ones((side, side, 3), np.float32)
    try:
        picture = decode_preview(Path(path), side)
    except UnreadableImage:  # changed since it was inspected: an empty tile
        return tile
    top, left = (side - picture.shape[0]) // 2, (side - picture.shape[1]) // 2
    tile[top : top + picture.shape[0], left : left + picture.shape[1]] = picture / 255.0
    return tile


def plot_findings(report: dict[str, Any], out: Path, side: int = 112, per_row: int = 4) -> Path | None:
    """``suspects.png``: each blank image and group of copies side by side, with its reason (None: none)."""
    from cnnlab.figures import mosaic, new_figure, save_figure, short

    rows = findings(report)
    if not rows:
        return None
    shown = rows[:FIGURE_ROWS]
    fig = new_figure(max(7.5, 1.6 * per_row), 1.95 * len(shown) + 0.5)
    for place, (files, reason) in enumerate(shown):
        ax = fig.add_subplot(len(shown), 1, place + 1)
        tiles = [_tile(f["path"], side) for f in files[:per_row]]
        tiles += [np.ones((side, side, 3), np.float32)] * (per_row - len(tiles))  # rows of one width
        ax.imshow(mosaic(tiles, per_row, 6, 1.0))
        ax.set_title("\n".join(textwrap.wrap(reason, 100)[:3]), loc="left", fontsize=8)
        names = [f"{f['split']}/{short(f['label'], 14)}\n{short(Path(f['path']).name, 20)}" for f in files[:per_row]]
        ax.set_xticks([(side + 6) * i + side / 2 for i in range(len(names))], names, fontsize=6)
        ax.set_yticks([])
        ax.tick_params(length=0)
        ax.spines[:].set_visible(False)
    more = f" (first {FIGURE_ROWS} of {len(rows)})" if len(rows) > FIGURE_ROWS else ""
    return save_figure(fig, out, f"Pictures that would mislead training{more}")


def write_inspection_figures(inspection: Inspection, out_dir: Path) -> list[Path]:
    """``samples.png`` (a few images per class), ``class_counts.png`` (images per class and split) and,
    when the doctor found any, ``suspects.png`` (blank images and copies, each with its reason)."""
    from cnnlab.figures import plot_class_counts, plot_samples_per_class

    images, labels, names = sample_images(inspection)
    counts = {s: {n: c["count"] for n, c in st["classes"].items()} for s, st in inspection.report["splits"].items()}
    written = [
        plot_samples_per_class(images, labels, names, Path(out_dir) / "samples.png"),
        plot_class_counts(counts, Path(out_dir) / "class_counts.png"),
    ]
    suspects = plot_findings(inspection.report, Path(out_dir) / "suspects.png")
    return written + ([suspects] if suspects is not None else [])
