"""Finds the labelled image files of a folder or a CSV listing, whatever its layout."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.errors import CnnlabError

SPLIT_DIRS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
LITTER = {"thumbs.db", "desktop.ini", "__macosx", ".ds_store"}


@dataclass
class Listing:
    """Labelled files per split ("train" always; "val"/"test" when the data brings them)."""

    files: dict[str, list[tuple[Path, str]]] = field(default_factory=dict)
    ignored: list[tuple[Path, str]] = field(default_factory=list)  # non-image files, with why


def _is_litter(path: Path, root: Path) -> bool:
    """Hidden files and OS litter, skipped silently (macOS resource forks, thumbnails)."""
    for part in path.relative_to(root).parts:
        if part.startswith(".") or part.lower() in LITTER:
            return True
    return False


def _class_files(class_dir: Path, extensions: frozenset[str], listing: Listing) -> list[Path]:
    """Every image file below ``class_dir`` (nested folders included), sorted for determinism."""
    found = []
    for path in sorted(class_dir.rglob("*")):
        if not path.is_file() or _is_litter(path, class_dir):
            continue
        if path.suffix.lower() in extensions:
            found.append(path)
        else:
            listing.ignored.append((path, f"not an image file type ({path.suffix or 'no extension'})"))
    return found


def _class_folders(split_dir: Path, extensions: frozenset[str], listing: Listing) -> list[tuple[Path, str]]:
    files = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if _is_litter(class_dir, split_dir):
            continue
        files += [(path, class_dir.name) for path in _class_files(class_dir, extensions, listing)]
    return files


def _from_csv(path: Path) -> Listing:
    """A CSV/TSV with columns path,label (and optionally split); paths relative to the file."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    listing = Listing()
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if "path" not in columns or "label" not in columns:
            raise CnnlabError(f"'{path}' needs a header with columns path,label (found: {', '.join(columns) or 'none'})")
        for row in reader:
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            split = SPLIT_DIRS.get(row.get("split", "") or "train")
            if split is None:
                raise CnnlabError(f"'{path}': split '{row['split']}' is not train, val or test")
            listing.files.setdefault(split, []).append((path.parent / row["path"], row["label"]))
    return listing


def discover(root: Path, extensions: frozenset[str]) -> Listing:
    """Lists labelled files: ``root/{train,val,test}/<class>/...``, ``root/<class>/...`` or a CSV.

    Raises:
        CnnlabError: when the path is missing or holds no class folders.
    """
    if not root.exists():
        raise CnnlabError(
            f"data '{root}' not found; give an image folder (one subfolder per class), a CSV "
            "listing (path,label) or a built-in set (cnnlab data list)"
        )
    if root.is_file():
        if root.suffix.lower() in {".csv", ".tsv"}:
            return _from_csv(root)
        raise CnnlabError(f"data '{root}' is a file; give a folder of class subfolders or a .csv listing")
    listing = Listing()
    split_dirs = [p for p in sorted(root.iterdir()) if p.is_dir() and p.name.lower() in SPLIT_DIRS]
    if split_dirs:
        for split_dir in split_dirs:
            split = SPLIT_DIRS[split_dir.name.lower()]
            listing.files.setdefault(split, []).extend(_class_folders(split_dir, extensions, listing))
    else:
        listing.files["train"] = _class_folders(root, extensions, listing)
    if not listing.files.get("train"):
        where = root / "train" if split_dirs else root
        raise CnnlabError(
            f"no images found in class folders under '{where}'; expected {where}/<class>/<image>.jpg"
        )
    return listing
