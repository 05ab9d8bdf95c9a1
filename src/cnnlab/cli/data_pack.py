"""``cnnlab data pack FOLDER OUT``: a labelled image folder as streaming shards, and what a packed folder holds."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from cnnlab.cli.options import add_option, given_options
from cnnlab.config import options_by_dest
from cnnlab.errors import plural

# the options of cnnlab train that decide what is packed: format (a model's, or given), splits (and the seed of
# the hold-out), decoding
PACK_OPTIONS = (
    "model",
    "pretrained",
    "image_size",
    "channels",
    "crop_mode",
    "val_split",
    "test_split",
    "seed",
    "workers",
    "image_store",
)


def add_pack_parser(sub: Any) -> argparse.ArgumentParser:
    """Registers ``cnnlab data pack`` under ``cnnlab data``."""
    pack = sub.add_parser(
        "pack",
        help="write an image folder as streaming shards (litdata) that cnnlab train OUT trains from",
        description="Decode a labelled image folder once and write it as streaming shards (litdata) in OUT, with "
        "a manifest (classes, channels, size, counts per split): cnnlab train OUT then trains from "
        "the shards, each process of a multi-process run reading its own part. The folder is read "
        "as cnnlab train reads it (train/ val/ test/ or class folders, unreadable files skipped and "
        "listed); without val/ and test/ they are held out now, as training would with the same "
        "--val-split, --test-split and --seed. Shards hold decoded images at the size and channels the "
        "model trains at: --model (and --pretrained) packs at that model's input, --image-size "
        "and --channels say it outright.",
        epilog="examples: cnnlab data pack photos/ photos-packed --image-size 128 && cnnlab train photos-packed\n"
        "          cnnlab data pack photos/ photos-224 --model efficientnet_lite0 --pretrained && "
        "cnnlab train photos-224 --model efficientnet_lite0 --pretrained",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pack.add_argument(
        "folder", metavar="FOLDER", help="image folder: train/ val/ test/ of class folders, or class folders"
    )
    pack.add_argument("out", metavar="OUT", help="new (or empty) folder to write the shards and manifest in")
    pack.add_argument(
        "--shard-size",
        type=float,
        default=64.0,
        metavar="MB",
        help="largest shard file in MB (default: 64); a process reads a shard at a time, "
        "from local disk or shared storage",
    )
    specs = options_by_dest()
    for name in PACK_OPTIONS:
        add_option(pack, specs[name])
    pack.set_defaults(func=run_pack)
    return pack


def run_pack(args: argparse.Namespace) -> int:
    from cnnlab.config import build_config
    from cnnlab.data.pack_write import pack_folder
    from cnnlab.errors import CnnlabError
    from cnnlab.models import model_input

    if not args.shard_size > 0:
        raise CnnlabError(f"--shard-size must be above 0 MB, got {args.shard_size:g}")
    specs = options_by_dest()
    given = given_options(args, [specs[name] for name in PACK_OPTIONS])
    config = build_config(data=args.folder, **given)
    # The model's input itself, without the margin a folder run stores for random crops: shards hold one format.
    needs = dataclasses.replace(model_input(config.model.name, config.model.pretrained), crop_pct=None)
    done = pack_folder(config.data, args.out, config.train.seed, args.shard_size, needs)
    counts = ", ".join(f"{split} {count:,}" for split, count in done.counts.items())
    classes = plural(len(done.class_names), "class", "classes")
    print(
        f"packed {sum(done.counts.values()):,} images ({counts}) of {classes} at {done.image_size} px, "
        f"{plural(done.channels, 'channel')}: {plural(done.shards, 'shard')}, {done.bytes / 1e6:.1f} MB, "
        f"in {done.seconds:.1f} s -> {done.out}"
    )
    if done.skipped:
        print(
            f"{plural(done.skipped, 'unreadable file')} skipped: listed in {done.out}/cnnlab-pack.json (cnnlab data "
            f"inspect {args.folder} --decode explains them)"
        )
    model = "" if "model" not in given else f" --model {config.model.name}" + " --pretrained" * config.model.pretrained
    print(f"train with: cnnlab train {done.out}{model}")
    return 0


def describe_packed(source: str) -> None:
    """Prints what a packed folder holds (cnnlab data inspect on a packed folder)."""
    from cnnlab.data.pack_read import read_manifest

    manifest = read_manifest(source)
    print(f"{source}: packed by cnnlab data pack (format {manifest['version']}) from {manifest['source']}")
    print(f"  {len(manifest['class_names'])} classes: {', '.join(manifest['class_names'])}")
    print(f"  images: {manifest['image_size']} px, {plural(manifest['channels'], 'channel')}, decoded (uint8)")
    for split, info in manifest["splits"].items():
        per_class = ", ".join(f"{name} {count}" for name, count in info["per_class"].items())
        print(f"  {split}: {info['count']:,} images ({per_class})")
    print(
        f"  skipped when packing: {plural(len(manifest.get('skipped', [])), 'file')}; inspect the original folder "
        "for its problems (cnnlab data inspect FOLDER)"
    )
