"""A generated image folder holding every bad case a user's data brings, written by the tests."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

GOOD_PER_CLASS = 10
# file name (under train/cat/) -> the reason fragment expected in skipped_files.csv
BAD = {"truncated.jpg": "truncated", "zero.jpg": "zero-byte", "text.jpg": "not an image", "huge.png": "too large"}
ODD_BUT_FINE = [
    "cmyk.jpg",
    "rgba.png",
    "deep16.png",
    "palette.gif",
    "rotated.jpg",
    "ünïcödé näme.jpg",
    "with space.png",
]


def noise(seed: int, size: tuple[int, int] = (16, 16)) -> Image.Image:
    """Random RGB pixels, different for every seed."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8))


def fake_png(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose IHDR claims width x height pixels: a decompression bomb's header."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))


def _odd_files(folder: Path) -> None:
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(folder / "cmyk.jpg")
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[4:12, 4:12] = (200, 30, 30, 255)
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    Image.fromarray(np.arange(256, dtype=np.uint16).reshape(16, 16) * 257).save(folder / "deep16.png")
    noise(701).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.gif")
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees: 20x12 stored, 12x20 displayed
    noise(702, (20, 12)).save(folder / "rotated.jpg", exif=exif.tobytes())
    noise(703).save(folder / "ünïcödé näme.jpg")
    noise(704).save(folder / "with space.png")


def _bad_files(folder: Path) -> None:
    full = folder / "full.tmp"
    noise(705, (96, 96)).save(full, format="JPEG", quality=95)
    (folder / "truncated.jpg").write_bytes(full.read_bytes()[:-2000])
    full.unlink()
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not a picture\n")
    fake_png(folder / "huge.png", 50_000, 50_000)


def write_messy_folder(root: Path) -> Path:
    """``root/{train,test}/{cat,dog}`` with bad, odd, duplicated, nested and littered files.

    Duplicates: train/dog/dup_of_0.png copies train/dog/img_0.png (within train), and
    test/cat/leak.png copies train/cat/img_0.png (leakage across splits).
    """
    for split, count, seed in (("train", GOOD_PER_CLASS, 0), ("test", 4, 1000)):
        for c, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                noise(seed + 100 * c + i).save(folder / f"img_{i}.png")
    cat, dog = root / "train" / "cat", root / "train" / "dog"
    _odd_files(cat)
    _bad_files(cat)
    (dog / "nested" / "deeper").mkdir(parents=True)
    noise(800).save(dog / "nested" / "deeper" / "inside.png")
    shutil.copy(dog / "img_0.png", dog / "dup_of_0.png")
    shutil.copy(cat / "img_0.png", root / "test" / "cat" / "leak.png")
    for litter in (root / ".DS_Store", cat / ".DS_Store", cat / "._img_0.png"):
        litter.write_bytes(b"\x00\x05\x16\x07 mac litter")
    macosx = root / "__MACOSX" / "train" / "cat"
    macosx.mkdir(parents=True)
    (macosx / "._img_1.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    return root
