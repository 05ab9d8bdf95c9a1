"""Turns a data config into train/val/test tensors: the single entry point of ``cnnlab.data``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnlab.collector import collector_paused
from cnnlab.config import DataConfig, SplitSpec
from cnnlab.config.sections import DISK_MIN_BYTES
from cnnlab.data.builtin import load_builtin
from cnnlab.data.crop import NO_MARGIN, stored_side
from cnnlab.data.decode import CENTER, Fit
from cnnlab.data.decoded_cache import cache_enabled
from cnnlab.data.discover import Listing, discover, too_few_classes
from cnnlab.data.folder import decode_files, default_side, guess_format
from cnnlab.data.normalize import default_stats
from cnnlab.data.pack_read import is_packed, open_packed
from cnnlab.data.preprocess import ModelInput
from cnnlab.data.sources import BUILTIN_NAMES
from cnnlab.data.split_records import decode_stored
from cnnlab.data.splits import hold_out
from cnnlab.data.types import ImageSet, PreparedData, SkippedFile
from cnnlab.errors import CnnlabError, suggest

log = logging.getLogger("cnnlab")


LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 luma weights of R, G, B, as PIL's convert("L")


def convert_images(images: torch.Tensor, channels: int, size: int | None) -> torch.Tensor:
    """Changes uint8 (N, C, H, W) images to ``channels`` (luminance or replication) and size."""
    if images.shape[1] != channels:
        if channels == 3:
            images = images.expand(-1, 3, -1, -1)
        else:
            weights = torch.tensor(LUMA).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
    if size is not None and tuple(images.shape[2:]) != (size, size):
        resized = []
        for chunk in images.split(1024):  # bounded memory for large sets
            out = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True)
            resized.append(out.round().clamp(0, 255).to(torch.uint8))
        images = torch.cat(resized)
    return images.contiguous()


def image_format(listing: Listing, cfg: DataConfig, needs: ModelInput = ModelInput()) -> tuple[int, int]:
    """(channels, side) the images of ``listing`` are decoded to: as asked, as the model needs, or
    from the files (grayscale when all are; the median shorter side, capped for a CPU)."""
    asked_channels, asked_side = cfg.channels or needs.channels, cfg.image_size or needs.image_size
    if asked_channels and asked_side:
        return int(asked_channels), int(asked_side)
    gray, median_side = guess_format([path for files in listing.files.values() for path, _ in files])
    channels = cfg.channels or needs.channels or (1 if gray else 3)
    return int(channels), int(cfg.image_size or needs.image_size or default_side(median_side))


def crop_fraction(cfg: DataConfig, needs: ModelInput = ModelInput()) -> float:
    """The share of each stored image the model sees: as asked, the pretrained model's, or all of it."""
    return float(cfg.crop_pct or needs.crop_pct or NO_MARGIN)


def square_fit(cfg: DataConfig, needs: ModelInput, channels: int) -> Fit:
    """How each photo becomes the stored square (``--crop-mode``); ``border`` pads with the model's mean."""
    return Fit.of(cfg.crop_mode, default_stats(channels, needs.mean, needs.std)[0])


def use_record_store(choice: str, decoded_bytes: int) -> bool:
    """Whether a folder whose images decode to ``decoded_bytes`` is kept in the record store on disk."""
    if choice == "auto":
        return cache_enabled() and decoded_bytes >= DISK_MIN_BYTES
    return choice == "disk"


def _builtin(
    cfg: DataConfig, needs: ModelInput, crop_pct: float
) -> tuple[ImageSet, dict[str, ImageSet], list[str], int]:
    pool, test, class_names = load_builtin(cfg.source)
    channels = cfg.channels or needs.channels or pool.images.shape[1]
    size = int(cfg.image_size or needs.image_size or pool.images.shape[-1])
    given = {"test": test} if test is not None else {}
    resized = crop_pct < NO_MARGIN or cfg.image_size or needs.image_size  # else: the set's own size
    for image_set in [pool, *given.values()]:
        image_set.images = convert_images(image_set.images, channels, stored_side(size, crop_pct) if resized else None)
    return pool, given, class_names, size


def _folder(
    cfg: DataConfig, needs: ModelInput, crop_pct: float, skipped: list[SkippedFile], cache_read_only: bool
) -> tuple[ImageSet, dict[str, ImageSet], list[str], int]:
    root = Path(cfg.source).expanduser()
    listing = discover(root)
    skipped += [SkippedFile(str(path), reason) for path, reason in listing.ignored]
    class_names = sorted({label for _, label in listing.files["train"]})
    if len(class_names) < 2:
        raise CnnlabError(too_few_classes(root, listing, class_names))
    for split, files in listing.files.items():
        extra = sorted({label for _, label in files} - set(class_names))
        if extra:
            raise CnnlabError(
                f"class '{extra[0]}' is in the {split} split but not in train{suggest(extra[0], class_names)}; "
                f"add its training images or remove it from {split}"
            )
        missing = sorted(set(class_names) - {label for _, label in files})
        if missing and split != "train":
            log.warning("classes only in train, not in %s: %s", split, ", ".join(missing))
    channels, size = image_format(listing, cfg, needs)
    index = {name: i for i, name in enumerate(class_names)}
    decoded = {}
    stored = stored_side(size, crop_pct)
    fit = square_fit(cfg, needs, channels)
    for split, (image_set, bad) in _decode_listing(listing, index, channels, stored, cfg, fit, cache_read_only).items():
        decoded[split] = image_set
        skipped += bad
    pool = decoded.pop("train")
    return pool, decoded, class_names, size


def _decode_listing(
    listing: Listing,
    index: dict[str, int],
    channels: int,
    size: int,
    cfg: DataConfig,
    fit: Fit,
    cache_read_only: bool = False,
    cache: bool | None = None,
) -> dict[str, tuple[ImageSet, list[SkippedFile]]]:
    """Each split of ``listing`` decoded, into memory (``cache``: see decode_files) or the record store on
    disk (``cfg.image_store``)."""
    on_disk = use_record_store(cfg.image_store, sum(map(len, listing.files.values())) * channels * size * size)
    decoded = {}
    for split, files in listing.files.items():
        labelled = [(path, index.get(label, 0)) for path, label in files]
        found = decode_stored(labelled, channels, size, cfg.workers, fit) if on_disk else None
        if found is None:
            found = decode_files(labelled, channels, size, cfg.workers, cache, cache_read_only, fit)
        decoded[split] = found
    return decoded


def _check_nonempty(splits: dict[str, ImageSet], class_names: list[str], held_out: dict[str, str]) -> None:
    """Every split has images and every class training images; ``held_out``: split -> the size asked for."""
    for split, image_set in splits.items():
        if len(image_set) == 0 and split in held_out:  # asked for none (e.g. --val-split 0), not lost to bad files
            why = "validation chooses the epochs and the kept stage" if split == "val" else "they score the run"
            raise CnnlabError(
                f"--{split}-split {held_out[split]} holds out no image, and cnnlab needs {split} images "
                f"({why}): give a fraction such as 0.05 or a count such as 500"
            )
        if len(image_set) == 0:
            raise CnnlabError(f"no usable image left in the {split} split (see skipped files)")
    counts = splits["train"].class_counts(len(class_names))
    for name, count in zip(class_names, counts):
        if count == 0:
            raise CnnlabError(f"no usable training image left in class '{name}' (see skipped files)")


def prepare_data(
    cfg: DataConfig, seed: int, needs: ModelInput = ModelInput(), cache_read_only: bool = False
) -> PreparedData:
    """Loads, decodes and splits the data named by ``cfg.source``.

    Missing val/test splits are held out of train (stratified, seeded), so the same config and
    seed always give the same split. ``cache_read_only``: use the decoded-image cache without
    writing to it (a multi-process run's ranks other than 0).

    Raises:
        CnnlabError: for a missing path, too few classes or images, or unusable data.
    """
    skipped: list[SkippedFile] = []
    crop_pct = crop_fraction(cfg, needs)
    if cfg.source in BUILTIN_NAMES:
        pool, given, class_names, side = _builtin(cfg, needs, crop_pct)
    elif is_packed(cfg.source):  # shards of cnnlab data pack: split when packed, the train split streams
        crop_pct = NO_MARGIN  # shards hold the pixels packed, the model's input itself (no margin)
        packed_side = int(cfg.image_size or needs.image_size or 0) or None
        given, class_names, skipped = open_packed(
            cfg.source, cfg.channels or needs.channels, packed_side, cfg.crop_mode
        )
        pool = given.pop("train")
        side = int(pool.shape[-1])
    else:
        with collector_paused():  # a Path and tuples per file, freed on return: see cnnlab.collector
            pool, given, class_names, side = _folder(cfg, needs, crop_pct, skipped, cache_read_only)
    labels = pool.labels.numpy()
    splits = dict(given)
    if "test" not in splits:
        test_spec = SplitSpec.parse(cfg.test_split, "--test-split")
        kept, held = hold_out(labels, test_spec, seed, class_names, "test")
        splits["test"], pool, labels = pool.subset(held), pool.subset(kept), labels[kept]
    if "val" not in splits:
        val_spec = SplitSpec.parse(cfg.val_split, "--val-split")
        if val_spec.kind in ("fraction", "auto"):  # a fraction of all images, as in 80/10/10
            total = len(labels) + len(splits["test"]) if "test" not in given else len(labels)
            val_spec = SplitSpec("count", val_spec.size(total))
        kept, held = hold_out(labels, val_spec, seed, class_names, "val")
        splits["val"], pool = pool.subset(held), pool.subset(kept)
    splits["train"] = pool
    asked = {"val": cfg.val_split, "test": cfg.test_split}
    _check_nonempty(splits, class_names, {name: asked[name] for name in asked if name not in given})
    ordered = {name: splits[name] for name in ("train", "val", "test")}
    crop = side if crop_pct < NO_MARGIN else None
    held_out = tuple(name for name in ("val", "test") if name not in given)
    return PreparedData(ordered, class_names, cfg.source, skipped, crop_pct, crop, held_out, cfg.crop_mode)


@dataclass(frozen=True)
class CacheWarmup:
    """What ``warm_cache`` did: images decoded (or found) at which format, and files it could not read."""

    images: int
    skipped: int
    channels: int
    size: int
    on_disk: bool = False  # in the record store rather than the SQLite cache


def warm_cache(cfg: DataConfig, needs: ModelInput = ModelInput()) -> CacheWarmup:
    """Decodes every image of the folder ``cfg.source`` into the decoded-image cache, ahead of training.

    Uses the format ``cnnlab train`` would pick for a model that ``needs`` this (default: its own
    CNNs; ``cfg``'s size, channels and crop_pct win), and the store it would pick
    (``cfg.image_store``: the SQLite cache, or the record store on disk).

    Raises:
        CnnlabError: a missing folder, or one without a usable image.
    """
    listing = discover(Path(cfg.source))
    channels, side = image_format(listing, cfg, needs)
    size = stored_side(side, crop_fraction(cfg, needs))
    count = skipped = 0
    on_disk = False
    fit = square_fit(cfg, needs, channels)
    for decoded, bad in _decode_listing(listing, {}, channels, size, cfg, fit, cache=True).values():
        count, skipped, on_disk = count + len(decoded), skipped + len(bad), decoded.stored
    if count == 0:
        raise CnnlabError(f"no usable image in '{cfg.source}'; see cnnlab data inspect {cfg.source}")
    return CacheWarmup(count, skipped, channels, size, on_disk)


def load_for_classes(
    source: str, class_names: list[str], channels: int, size: int, workers: int, fit: Fit = CENTER
) -> ImageSet:
    """Every image of ``source`` (its test split if it has one), labelled by a trained model's classes,
    decoded to ``size`` (a run's ``stored_side``: the model's input plus its margin) as ``fit`` says.

    Raises:
        CnnlabError: a class the model does not know, or no usable image.
    """
    if source in BUILTIN_NAMES:
        pool, test, names = load_builtin(source)
        image_set = test if test is not None else pool
        image_set.images = convert_images(image_set.images, channels, size)
        files: list[tuple[str | Path, str]] = [
            (image_set.ids[i], names[int(label)]) for i, label in enumerate(image_set.labels)
        ]
    elif is_packed(source):  # its test split, read from the shards
        splits, names, _ = open_packed(source, channels, size, fit.mode)
        image_set = splits["test"]
        files = [(image_set.ids[i], names[int(label)]) for i, label in enumerate(image_set.labels)]
    else:
        listing = discover(Path(source))
        files = [*(listing.files.get("test") or [f for split in listing.files.values() for f in split])]
        image_set = None
    unknown = sorted({label for _, label in files} - set(class_names))
    if unknown:
        raise CnnlabError(
            f"'{source}' has class '{unknown[0]}' that the model was not trained on"
            f"{suggest(unknown[0], class_names)}; it knows: {', '.join(class_names[:10])}"
            f"{'...' if len(class_names) > 10 else ''}"
        )
    index = {name: i for i, name in enumerate(class_names)}
    if image_set is not None:
        image_set.labels = torch.tensor([index[label] for _, label in files])
        return image_set
    decoded, skipped = decode_files([(Path(p), index[label]) for p, label in files], channels, size, workers, fit=fit)
    if skipped:
        log.warning(
            "%d unreadable files skipped in %s (first: %s: %s)",
            len(skipped),
            source,
            skipped[0].path,
            skipped[0].reason,
        )
    if len(decoded) == 0:
        raise CnnlabError(f"no usable image in '{source}'")
    return decoded
