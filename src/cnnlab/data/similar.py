"""One picture in several files, and pictures with nothing in them: perceptual hashes and blank checks.

Each image is looked at once, as a small thumbnail (:class:`Look`): its 64-bit perceptual hash (the
pHash of the ``imagehash`` library: the 32 x 32 gray picture's 8 x 8 lowest DCT frequencies, each bit
"above their median"), its mean colour, and how much is in it (colours, luminance entropy and spread).
Two images are copies of one picture when their hashes differ in at most :data:`NEAR` of 64 bits and
their mean colours agree (the hash sees only gray levels: a red and a green square of one shape would
match). Resizing, re-encoding and small brightness changes keep the hash within a few bits.

Data sets of thousands of images are compared all against all: XOR of uint64 hashes and a popcount,
in blocks (``numpy.bitwise_count``), about 10^8 pairs a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageStat

HASH_SIDE = 32  # px: the gray picture the DCT is taken of (imagehash's phash: hash_size 8 x highfreq_factor 4)
HASH_BITS = 8  # the 8 x 8 lowest frequencies: 64 bits
NEAR = 6  # bits of 64: at most this far apart (and of one mean colour), two images are one picture
CHROMA = 0.04  # max difference of r/(r+g+b) or g/(r+g+b): beyond, not one picture (other colours)
BRIGHTNESS = 1.3  # max ratio of mean brightness: a copy brightened by a third is still the same picture
# Pairs within NEAR bits are confirmed on their 16 x 16 gray thumbnails (mean removed, correlation): in
# 60,000 CIFAR-10 photos two chance pairs of other pictures (an airliner and a ship; a bird and a deer)
# sat 6 bits apart, at 0.78 and 0.75; copies made on purpose (half size, JPEG 60, +15% brightness,
# +20% contrast) kept 0.93 or more in 99% of photos, and the same photo found twice in dtd10 and
# CIFAR-10 0.89 or more.
ALIKE = 0.85
FLAT = 3.0  # luminance standard deviation (of 255) under which an image is one flat colour: blank
# Near-blank, only in a set of rich pictures (its median image has RICH_SET bits of luminance entropy or
# more: photos, not digits or drawings): few colours, little entropy, and one colour over most of it (a
# placeholder: a plain field with a small icon or a line of text). Photos of a plain wall or sky keep 4+
# bits of entropy from their grain; a checkerboard has few colours but no colour over half of it.
RICH_SET = 4.0
SPARSE_ENTROPY = 2.0  # bits
FEW_COLOURS = 8  # colours (16 levels a channel) covering 95% of the picture
DOMINANT = 0.75
NEAR_COLOUR = 12  # levels a channel: pixels this close to the median colour count as that colour
BLOCK = 256  # rows of the all-against-all comparison at once (256 x 60,000 XORs: 120 MB)


@dataclass(frozen=True)
class Look:
    """What a thumbnail says about a picture: its perceptual hash, mean colour and information."""

    phash: int  # 64 bits
    mean: tuple[float, float, float]  # mean R, G, B (0-255)
    colours: int  # colours (16 levels a channel) that cover 95% of the pixels
    dominant: float  # share of the pixels within NEAR_COLOUR levels of the median colour
    entropy: float  # bits: Shannon entropy of the 256-level luminance histogram
    spread: float  # luminance standard deviation, 0-255
    thumb: bytes = b""  # 16 x 16 gray, uint8: confirms a pair the hash found


def _dct_matrix(n: int) -> np.ndarray:
    """The DCT-II as a matrix: ``D @ x`` is ``scipy.fftpack.dct(x)`` (unnormalised, as imagehash takes it)."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    return 2 * np.cos(np.pi * (2 * i + 1) * k / (2 * n))


_DCT = _dct_matrix(HASH_SIDE)[:HASH_BITS]  # only the lowest frequencies are kept: compute only those
_BIT_VALUES = np.left_shift(np.uint64(1), np.arange(HASH_BITS * HASH_BITS - 1, -1, -1, dtype=np.uint64))


def phash(gray: np.ndarray) -> int:
    """The 64-bit perceptual hash of a (32, 32) float gray picture: imagehash's ``phash`` (its bits in
    the order ``str(imagehash.phash(image))`` prints them as hex)."""
    low = _DCT @ gray @ _DCT.T
    bits = (low > np.median(low)).ravel()
    return int(_BIT_VALUES[bits].sum())


def _palette(rgb: np.ndarray) -> tuple[int, float, np.ndarray]:
    """How many colours (16 levels a channel) cover 95% of an (H, W, 3) uint8 picture, the share of its
    pixels near its median colour (a plain field's share, whatever its JPEG noise), and its mean colour.
    Counted on pixels sampled at most 64 a side: exact colours (sampled, not averaged), and fast."""
    step = max(1, max(rgb.shape[:2]) // 64)
    pixels = rgb[::step, ::step].reshape(-1, 3)
    quantised = (pixels >> 4).astype(np.uint16)
    codes = (quantised[:, 0] << 8) | (quantised[:, 1] << 4) | quantised[:, 2]
    counts = np.sort(np.bincount(codes, minlength=4096))[::-1]
    colours = int(np.searchsorted(np.cumsum(counts), 0.95 * len(codes)) + 1)
    half = len(pixels) / 2  # the median of each channel, from its histogram
    median = [np.searchsorted(np.cumsum(np.bincount(pixels[:, c], minlength=256)), half) for c in range(3)]
    near = (np.abs(pixels.astype(np.int16) - np.array(median, np.int16)) <= NEAR_COLOUR).all(axis=1)
    return colours, float(near.mean()), pixels.mean(0)


def look_at(picture: np.ndarray) -> Look:
    """The :class:`Look` of an (H, W, 3) uint8 picture: best a preview of ~128 px (``decode_preview``)."""
    rgb = Image.fromarray(np.ascontiguousarray(picture), "RGB")
    gray = rgb.convert("L")  # ITU-R 601-2 luma, as imagehash takes it
    hashed = gray.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS)
    small = np.asarray(hashed, dtype=np.float64)
    colours, dominant, mean = _palette(picture)
    return Look(
        phash(small),
        (float(mean[0]), float(mean[1]), float(mean[2])),
        colours,
        dominant,
        max(0.0, gray.entropy()),
        ImageStat.Stat(gray).stddev[0],
        hashed.reduce(2).tobytes(),
    )


def blank_reason(look: Look, typical_entropy: float) -> str | None:
    """Why the picture is blank or near-blank (a placeholder, not a photo of its class), or None.

    One flat colour is blank in any data set; a plain field with little in it only where the data set's
    median image (``typical_entropy`` bits) is rich: in a set of digits or line drawings, sparse is normal.
    """
    if look.spread < FLAT:
        return f"blank: one flat colour (luminance spread {look.spread:.1f} of 255)"
    if typical_entropy < RICH_SET:
        return None
    if look.entropy < SPARSE_ENTROPY and look.colours <= FEW_COLOURS and look.dominant >= DOMINANT:
        return (
            f"near-blank: one colour covers {look.dominant:.0%}, {look.colours} colour"
            f"{'s' if look.colours > 1 else ''}, entropy {look.entropy:.1f} bits (the set's median image: "
            f"{typical_entropy:.1f})"
        )
    return None


def typical_entropy(looks: list[Look]) -> float:
    """The median image's luminance entropy in bits: how much a picture of this data set holds."""
    return float(np.median([look.entropy for look in looks])) if looks else 0.0


def _hamming_block(block: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    return np.bitwise_count(block[:, None] ^ hashes[None, :])


def _same_colour(means: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Whether the pairs' mean colours agree: chromaticity within CHROMA, brightness within BRIGHTNESS."""
    total = means.sum(1) + 3.0  # +1 a channel: black has no chromaticity to divide by
    chroma = (means[:, :2] + 1.0) / total[:, None]
    close = np.abs(chroma[first] - chroma[second]).max(1) <= CHROMA
    ratio = total[first] / total[second]
    return close & (ratio <= BRIGHTNESS) & (ratio >= 1 / BRIGHTNESS)


def _alike(thumbs: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Whether the pairs' thumbnails correlate at ALIKE or more (flat thumbnails: alike)."""
    a, b = thumbs[first], thumbs[second]
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(1) / np.maximum(norms, 1e-9), 1.0) >= ALIKE


def _thumbs(looks: list[Look]) -> np.ndarray:
    side = (HASH_SIDE // 2) ** 2
    return np.array(
        [
            np.frombuffer(look.thumb, np.uint8) if len(look.thumb) == side else np.zeros(side, np.uint8)
            for look in looks
        ],
        dtype=np.float32,
    )


def near_pairs(looks: list[Look], near: int = NEAR) -> list[tuple[int, int, int]]:
    """Every pair (i, j, bits apart), i < j, of pictures within ``near`` bits, of one mean colour and
    alike thumbnails."""
    if len(looks) < 2:
        return []
    hashes = np.array([look.phash for look in looks], dtype=np.uint64)
    means = np.array([look.mean for look in looks], dtype=np.float64)
    thumbs = _thumbs(looks)
    found = []
    for start in range(0, len(hashes), BLOCK):
        # each block against itself and the images after it: every pair once
        distance = _hamming_block(hashes[start : start + BLOCK], hashes[start:])
        rows, cols = np.nonzero(distance <= near)
        keep = cols > rows
        rows, cols = rows[keep], cols[keep]
        first, second = rows + start, cols + start
        same = _same_colour(means, first, second)
        same[same] = _alike(thumbs, first[same], second[same])
        found += list(zip(first[same].tolist(), second[same].tolist(), distance[rows, cols][same].tolist()))
    return found


def copy_groups(count: int, pairs: list[tuple[int, int, Any]]) -> list[list[int]]:
    """Pictures linked by pairs, as groups of indices (each sorted, two or more members)."""
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for first, second, _ in pairs:
        a, b = root(first), root(second)
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(count):
        groups.setdefault(root(i), []).append(i)
    return [members for members in groups.values() if len(members) > 1]


def bits_apart(first: Look, second: Look) -> int:
    """How many of the 64 hash bits differ."""
    return (first.phash ^ second.phash).bit_count()


@dataclass(frozen=True)
class Copy:
    """Two images of one picture: ``first`` < ``second``, indices into the looks compared."""

    first: int
    second: int
    bits: int  # perceptual-hash bits apart (0-64)
    exact: bool  # the same content (bytes or pixels), not only the same picture

    @property
    def reason(self) -> str:
        if self.exact:
            return "exact copy"
        if self.bits == 0:
            return "near copy: the same perceptual hash, other bytes"
        return f"near copy: perceptual hash {self.bits} of 64 bits apart"


def same_pictures(looks: list[Look], digests: list[str], near: int = NEAR) -> tuple[list[Copy], str | None]:
    """Exact copies (equal ``digests``) and near copies (see :func:`near_pairs`), and a note when near copies
    were not searched: in a set of sparse pictures (digits, line drawings) different images share a hash.
    """
    copies: dict[tuple[int, int], Copy] = {}
    first_of: dict[str, int] = {}
    for index, digest in enumerate(digests):
        first = first_of.setdefault(digest, index)
        if first != index:  # every copy linked to the first: a group, not all its pairs
            copies[(first, index)] = Copy(first, index, bits_apart(looks[first], looks[index]), True)
    typical = typical_entropy(looks)
    if typical < RICH_SET and looks:
        return list(copies.values()), (
            f"near copies not searched: the images hold little (median entropy "
            f"{typical:.1f} bits, like digits or drawings), where different images "
            "share a perceptual hash; exact copies were"
        )
    for first, second, bits in near_pairs(looks, near):
        copies.setdefault((first, second), Copy(first, second, bits, digests[first] == digests[second]))
    return sorted(copies.values(), key=lambda c: (c.first, c.second)), None
