"""``cnnlab data``: list the built-in sets, inspect a folder (the data doctor), warm the cache."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnnlab.cli.data_pack import add_pack_parser, describe_packed
from cnnlab.cli.label_issues_cmd import add_label_issues_parser
from cnnlab.cli.options import add_option, given_options
from cnnlab.cli.output import add_format_argument, print_json, print_wide, stdout_console
from cnnlab.config import options_by_dest
from cnnlab.errors import plural

MAX_LISTED = 15  # rows per problem list in the table; --format json has them all


# --model/--pretrained: the size, channels and margin that model's training run decodes to.
CACHE_OPTIONS = ("model", "pretrained", "image_size", "channels", "crop_pct", "crop_mode", "workers", "image_store")


def _data_options(parser: argparse.ArgumentParser, *names: str) -> None:
    """The data options of ``cnnlab train`` that this command shares (same flags, help and checks)."""
    specs = options_by_dest()
    for name in names:
        add_option(parser, specs[name])


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Registers ``cnnlab data {list,inspect,cache,pack}``."""
    p = subparsers.add_parser(
        "data",
        help="list built-in sets, inspect a folder, warm the cache, pack shards, find label errors",
        description="Data sets: what is built in, what a folder holds, the decoded cache.",
    )
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="the built-in data sets, offline and online")
    ls.set_defaults(func=run_list)
    ins = sub.add_parser(
        "inspect",
        help="the data doctor: counts, formats, sizes, bad files, blank images, copies (exact and near), leakage",
        description="Check a folder or CSV listing before training; ends with a verdict line.",
    )
    ins.add_argument("data", metavar="DATA", help="image folder or CSV listing (path,label[,split])")
    add_format_argument(
        ins, ("table", "json"), "table for people, json for scripts (lists every problem) (default: table)"
    )
    ins.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="also write samples.png (images per class), class_counts.png and, when there are "
        "findings, suspects.png (blank images and copies with their reasons) to DIR",
    )
    ins.add_argument(
        "--decode",
        action="store_true",
        help="kept for old scripts: every image is decoded now (a small preview), finding truncated files",
    )
    ins.add_argument("--strict", action="store_true", help="exit code 1 when the verdict lists problems")
    _data_options(ins, "workers")
    ins.set_defaults(func=run_inspect)
    ca = sub.add_parser(
        "cache",
        help="decode a folder into the cache ahead of training; or --clear/--prune",
        description="The decoded-image cache ($CNNLAB_CACHE_DIR or ~/.cache/cnnlab): decoded/ (SQLite, "
        "for data held in memory) and records/ (stores read from disk).",
    )
    ca.add_argument("data", metavar="DATA", nargs="?", help="image folder or CSV listing to decode into the cache")
    _data_options(ca, *CACHE_OPTIONS)
    ca.add_argument("--clear", action="store_true", help="delete the whole cache (SQLite and record stores)")
    ca.add_argument("--prune", action="store_true", help="drop entries of files that changed or are gone")
    ca.set_defaults(func=run_cache)
    add_pack_parser(sub)
    add_label_issues_parser(sub)
    return p


def run_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from cnnlab.data.builtin import availability
    from cnnlab.data.sources import BUILTIN_DESCRIPTIONS

    table = Table("name", "where", "what", title="built-in data sets (cnnlab train NAME)")
    for name, what in BUILTIN_DESCRIPTIONS.items():
        table.add_row(name, availability(name), what)
    stdout_console().print(table)
    print("Your own data: cnnlab train path/to/images  (train/<class>/*, <class>/*, or a CSV path,label)")
    return 0


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" if len(counts) > 1 else k for k, v in counts.items())


def _print_report(report: dict[str, Any]) -> None:
    """``cnnlab data inspect``'s report for people: the split/class table, then each kind of problem found."""
    from rich.markup import escape

    console = stdout_console()
    print_wide(console, _class_table(report))
    ratios = ", ".join(f"{split} {ratio:g}x" for split, ratio in report["imbalance"].items())
    console.print(f"class imbalance (largest / smallest class): {ratios}")
    for title, rows in _problem_sections(report):
        if rows:
            console.print(f"[b]{title} ({len(rows)})[/b]")
            for row in rows[:MAX_LISTED]:
                console.print("  " + escape(row), soft_wrap=True)
            if len(rows) > MAX_LISTED:
                console.print(f"  ... and {len(rows) - MAX_LISTED} more (--format json lists all)")
    for note in report["notes"]:
        console.print(f"note: {escape(note)}", soft_wrap=True)
    colour = "green" if report["verdict"] == "OK" else "yellow"
    console.print(f"[b {colour}]verdict: {escape(report['verdict'])}[/b {colour}]", soft_wrap=True)


def _class_table(report: dict[str, Any]) -> Any:
    """One row per split and class (count, share, formats, modes, sizes, skipped), and each split's total."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        "split",
        "class",
        "images",
        "share",
        "formats",
        "modes",
        "size min/median/max",
        "skipped",
        title=f"{report['source']} ({report['layout']} layout)",
        caption=f"checked: {report['checked']}",
    )
    for split, stats in report["splits"].items():
        for name, c in stats["classes"].items():
            sizes = list(dict.fromkeys(c["size"].values())) if c["size"] else ["-"]
            size = sizes[0] if len(sizes) == 1 else " / ".join(c["size"].values())
            table.add_row(
                split,
                escape(name),
                str(c["count"]),
                f"{c['share']:.1%}",
                _fmt_counts(c["formats"]),
                _fmt_counts(c["modes"]),
                size,
                str(c["skipped"] or ""),
            )
        table.add_row(split, "[b]all[/b]", f"[b]{stats['count']}[/b]", "", "", "", "", "", end_section=True)
    return table


def _problem_sections(report: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(title, one line per finding) for each kind of problem the inspection looks for."""
    return [
        ("skipped files", [f"{s['path']}: {s['reason']}" for s in report["skipped"]]),
        (
            "blank or near-blank images",
            [f"{s['split']}/{s['label']}: {s['path']}: {s['reason']}" for s in report["near_blank"]],
        ),
        (
            "duplicates within a split",
            [f"{g['split']}: " + "  =  ".join(g["paths"]) + f"  ({g['reason']})" for g in report["duplicates"]],
        ),
        (
            "leakage: same image in several splits",
            [
                "  =  ".join(f"{f['split']}/{f['label']}: {f['path']}" for f in g["files"]) + f"  ({g['reason']})"
                for g in report["leakage"]
            ],
        ),
        (
            "same image, different labels",
            [
                "  =  ".join(f"{f['label']}: {f['path']}" for f in g["files"]) + f"  ({g['reason']})"
                for g in report["conflicts"]
            ],
        ),
    ]


def run_inspect(args: argparse.Namespace) -> int:
    from cnnlab.config import DataConfig
    from cnnlab.data.inspect import inspect_data, write_inspection_figures
    from cnnlab.data.pack_read import is_packed

    if is_packed(args.data):
        describe_packed(args.data)
        return 0
    workers = DataConfig(workers=getattr(args, "workers", DataConfig.workers)).workers  # checked as in train
    inspection = inspect_data(Path(args.data), workers=workers)
    report = inspection.report
    written = write_inspection_figures(inspection, args.out) if args.out is not None else []
    if args.format == "json":
        print_json(report)
    else:
        _print_report(report)
        for path in written:
            print(f"wrote {path}")
    return 1 if args.strict and report["problems"] else 0


def run_cache(args: argparse.Namespace) -> int:
    from cnnlab.data.decoded_cache import DecodedCache, cache_file
    from cnnlab.data.split_records import clear_stores, store_root, store_usage

    store = DecodedCache()
    if args.clear:
        store.clear()
        clear_stores()
        print(f"cleared {cache_file()} and {store_root()}")
        return 0
    if args.prune:
        print(f"pruned {store.prune()} stale entries")
    if args.data is None:
        if not args.prune:
            entries, size = store.stats()
            print(f"{cache_file()}: {plural(entries, 'image')}, {size / 1e6:.1f} MB")
            stores, size = store_usage()
            print(f"{store_root()}: {plural(stores, 'record store')}, {size / 1e6:.1f} MB")
        store.close()
        return 0
    store.close()
    import time

    from cnnlab.data.pack_read import is_packed
    from cnnlab.errors import CnnlabError

    if is_packed(args.data):
        raise CnnlabError(f"'{args.data}' is packed: its images are decoded already; train from it directly")

    from cnnlab.config import build_config
    from cnnlab.data.prepare import warm_cache
    from cnnlab.models import model_input

    specs = options_by_dest()
    config = build_config(data=args.data, **given_options(args, [specs[name] for name in CACHE_OPTIONS]))
    started = time.perf_counter()
    done = warm_cache(config.data, model_input(config.model.name, config.model.pretrained))
    print(
        f"cached {plural(done.images, 'image')} at {done.size}x{done.size}, {plural(done.channels, 'channel')}, in "
        f"{time.perf_counter() - started:.1f} s{f' ({done.skipped} unreadable skipped)' if done.skipped else ''}"
        f" -> {store_root() if done.on_disk else cache_file()}"
    )
    return 0
