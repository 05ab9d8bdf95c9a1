"""A packed folder (``cnnlab data pack``): streaming shards that ``cnnlab train OUT`` trains from.

Layout of a packed folder (written by cnnlab.data.pack_write):

- ``cnnlab-pack.json``: the manifest, all training needs besides the shards: format version, class
  names, channels, side, the seed and split sizes that made the splits, per split its image count,
  and the files skipped while packing.
- ``train/``, ``val/``, ``test/``: one litdata dataset each (``index.json`` + ``chunk-*.bin``
  shards); item k is ``{"image": uint8 (C, side, side), "label": int, "row": k}``.
- ``items-<split>.json``: labels and ids (source file paths) in row order, so a split is an
  ImageSet (counts, fingerprint, report) without reading a shard.

The training split streams (``PackedSplit.train_loader``): litdata's StreamingDataset reads the
shards chunk by chunk in a shuffled order and gives each rank its own chunks (equal item counts,
so no rank waits for another). Evaluation passes read rows by index (``PackedSplit.read``), like
the record store, so the evaluator, report and feature caches work unchanged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.errors import CnnlabError

if TYPE_CHECKING:
    from cnnlab.data.types import ImageSet, SkippedFile

log = logging.getLogger("cnnlab")

PACK_VERSION = 1  # bump when the manifest or item layout changes
MANIFEST = "cnnlab-pack.json"
SPLITS = ("train", "val", "test")


def local_path(source: str | Path) -> Path:
    """The local folder of ``source``: a path, or a ``file://`` URL."""
    text = str(source)
    return Path(text.removeprefix("file://")).expanduser()


def is_packed(source: str | Path) -> bool:
    """True when ``source`` is a folder written by ``cnnlab data pack``: it holds the manifest, or
    shards without one (then reading it says the manifest is missing, not that no image is found)."""
    root = local_path(source)
    return (root / MANIFEST).is_file() or (root / "train" / "index.json").is_file()


def items_file(root: Path, split: str) -> Path:
    """The labels and ids of ``split``'s rows."""
    return root / f"items-{split}.json"


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CnnlabError(f"{what} '{path}' is missing; pack the folder again with cnnlab data pack") from None
    except (OSError, ValueError) as exc:
        raise CnnlabError(f"{what} '{path}' is unreadable ({type(exc).__name__}); pack the folder again") from None


def read_manifest(source: str | Path) -> dict[str, Any]:
    """The manifest of a packed folder, checked (version, keys, every shard present at its size).

    Raises:
        CnnlabError: not a packed folder, or a manifest or shard missing, truncated or of another version.
    """
    root = local_path(source)
    if not root.is_dir():
        raise CnnlabError(f"packed data '{root}' not found; write it with cnnlab data pack FOLDER {root}")
    manifest = _read_json(root / MANIFEST, "pack manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != "cnnlab-pack":
        raise CnnlabError(f"'{root / MANIFEST}' is not a cnnlab pack manifest; pack the folder again")
    if manifest.get("version") != PACK_VERSION:
        raise CnnlabError(
            f"'{root}' was packed in format {manifest.get('version')}, this cnnlab reads "
            f"{PACK_VERSION}; pack the folder again"
        )
    for split in SPLITS:
        _check_shards(root / split)
    return manifest


def _check_shards(folder: Path) -> None:
    """Every shard listed by litdata's index is there, whole: a lost one would make the reader wait forever."""
    index = _read_json(folder / "index.json", "shard index")
    for chunk in index.get("chunks", []):
        shard = folder / chunk["filename"]
        size = shard.stat().st_size if shard.is_file() else None
        if size != chunk["chunk_bytes"]:
            state = "missing" if size is None else f"truncated ({size:,} of {chunk['chunk_bytes']:,} bytes)"
            raise CnnlabError(f"shard '{shard}' is {state}; pack the folder again with cnnlab data pack")


def require_litdata() -> None:
    """Raises a clear error when the optional streaming library is not installed."""
    try:
        import litdata  # noqa: F401
    except ImportError:
        raise CnnlabError("packed data needs the litdata library: pip install 'cnnlab[stream]'") from None


def _collate(items: list[dict[str, Any]]) -> tuple[Any, Any]:
    """litdata items to the (uint8 images, labels) batch the training step takes."""
    import torch

    images = torch.from_numpy(np.stack([np.asarray(item["image"]) for item in items]))
    return images, torch.as_tensor([int(item["label"]) for item in items], dtype=torch.long)


class PackedSplit:
    """One split of a packed folder: rows read by index (a RecordSource), or streamed for training.

    Picklable: the litdata dataset is opened on first use in each process.
    """

    def __init__(self, folder: Path, count: int, channels: int, side: int) -> None:
        self.folder, self.shape = Path(folder), (count, channels, side, side)
        self._dataset: Any = None

    def __len__(self) -> int:
        return self.shape[0]

    def _indexed(self) -> Any:
        if self._dataset is None:
            require_litdata()
            from litdata import StreamingDataset

            self._dataset = StreamingDataset(str(self.folder), batch_decode=False)  # see train_loader
        return self._dataset

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The images at ``rows`` as a new (len(rows), C, H, W) uint8 array."""
        dataset = self._indexed()
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.uint8)
        for i, row in enumerate(np.asarray(rows, dtype=np.int64).reshape(-1).tolist()):
            out[i] = dataset[row]["image"]
        return out

    def prefetch(self, rows: np.ndarray) -> None:
        """Nothing: litdata reads whole shards and keeps them open."""

    def train_loader(
        self,
        batch_size: int,
        seed: int,
        shard: tuple[int, int],
        num_nodes: int = 1,
        epoch_of: Callable[[], int] | None = None,
    ) -> Any:
        """A StreamingDataLoader of shuffled (uint8 images, labels) batches of this process's part.

        ``shard``: (rank, world_size) of this process (the Trainer's); with several, litdata gives each
        rank its own shards and drops the last few items of an epoch so all ranks take as many steps
        (the shuffle differs each epoch, so no image is left out for good). ``epoch_of``: the epoch
        about to run (the Trainer's), so that epoch k is shuffled the same in a resumed run as in an
        uninterrupted one; None: the loader counts its own epochs from 0.
        """
        require_litdata()
        from litdata import StreamingDataset
        from litdata.utilities.env import _DistributedEnv

        from cnnlab.data.stream_loader import EpochStreamingLoader

        rank, world_size = shard
        # item_shuffle_window 0: a full shuffle within each shard (litdata's default shuffles blocks of
        # 256); batch_decode off: litdata's decodes a window of ~90 items around each one read, the
        # rest thrown away when the order is shuffled (224-px shards: 70 img/s with it, 4,200 without)
        dataset = StreamingDataset(
            str(self.folder),
            shuffle=True,
            seed=seed,
            drop_last=world_size > 1,
            item_shuffle_window=0,
            batch_decode=False,
        )
        # the Trainer's ranks, told explicitly: litdata's own detection needs torch.distributed started
        # in this process, which a loader built for a test or a tool is not
        dataset.distributed_env = _DistributedEnv(world_size, rank, num_nodes)
        return EpochStreamingLoader(
            dataset, batch_size=batch_size, num_workers=0, collate_fn=_collate, epoch_of=epoch_of
        )

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "shape": self.shape, "_dataset": None}


def open_packed(
    source: str, channels: int | None, side: int | None, crop_mode: str | None = None
) -> tuple[dict[str, ImageSet], list[str], list[SkippedFile]]:
    """The splits of a packed folder as ImageSets, its class names and the files skipped when packing.

    ``channels``/``side``/``crop_mode``: what the run asks for (None: the packed format); the shards
    hold one format, so asking for another is an error that says how to pack it.

    Raises:
        CnnlabError: see :func:`read_manifest`, or a format other than the packed one.
    """
    import torch

    from cnnlab.data.types import ImageSet, SkippedFile

    root = local_path(source)
    manifest = read_manifest(root)
    packed = (int(manifest["channels"]), int(manifest["image_size"]))
    asked = (channels or packed[0], side or packed[1])
    if asked != packed:
        raise CnnlabError(
            f"'{root}' is packed at {packed[1]} px, {packed[0]} channel(s), this run needs {asked[1]} px, "
            f"{asked[0]} channel(s); pack again with --image-size {asked[1]} --channels {asked[0]} (or "
            f"train with --image-size {packed[1]})"
        )
    packed_mode = str(manifest.get("crop_mode", "center"))  # packs made before --crop-mode: centre crops
    if crop_mode is not None and crop_mode != packed_mode:
        raise CnnlabError(
            f"'{root}' is packed with --crop-mode {packed_mode}, this run asks for --crop-mode {crop_mode}; "
            f"pack again with --crop-mode {crop_mode} (or train with --crop-mode {packed_mode})"
        )
    splits = {}
    for split in SPLITS:
        items = _read_json(items_file(root, split), "item list")
        labels = torch.as_tensor(items["labels"], dtype=torch.long)
        if len(labels) != manifest["splits"][split]["count"]:
            raise CnnlabError(f"'{items_file(root, split)}' does not match '{root / MANIFEST}'; pack again")
        splits[split] = ImageSet(PackedSplit(root / split, len(labels), *packed), labels, list(items["ids"]))
    skipped = [SkippedFile(item["path"], item["reason"]) for item in manifest.get("skipped", [])]
    return splits, list(manifest["class_names"]), skipped


def streamable(image_set: Any) -> PackedSplit | None:
    """The packed split a whole ImageSet reads from, if it is one (a subset cannot stream)."""
    source = getattr(image_set, "source", None)
    return source if isinstance(source, PackedSplit) and image_set.rows is None else None
