"""Tests for cnnlab.data.decode; every image file is written into tmp_path by the test."""

from __future__ import annotations

import struct
import subprocess
import sys
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from cnnlab.data.decode import DEFAULT_MAX_PIXELS, ImageInfo, UnreadableImage, decode_image, is_grayscale, probe_image
from cnnlab.data.discover import IMAGE_EXTENSIONS
from cnnlab.errors import CnnlabError

_CHILD = """import sys; from pathlib import Path; from cnnlab.data.decode import *
for p in sys.argv[1:]:
    try: decode_image(Path(p), 3)
    except UnreadableImage as e: print(e.reason)
"""


def _noise(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8))


def _fake_png(path: Path, width: int, height: int) -> Path:
    """Write a tiny PNG whose IHDR claims width x height 8-bit RGB pixels."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + tag + data + crc

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr + idat + chunk(b"IEND", b""))
    return path


def _check(arr: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    assert arr.dtype == np.uint8 and arr.shape == shape and arr.flags.writeable
    return arr


def _decode_or_reason(path: Path) -> np.ndarray | str:
    try:
        return decode_image(path, 3, size=32)
    except UnreadableImage as exc:
        return exc.reason


def _reason(path: Path, channels: int = 3, size: int | None = None) -> str:
    with pytest.raises(UnreadableImage) as err:
        decode_image(path, channels, size)
    return err.value.reason


def test_channels_luminance_and_gray_replication(tmp_path: Path) -> None:
    path, gray_path = tmp_path / "a.jpg", tmp_path / "g.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(path, quality=95)
    Image.new("L", (8, 6), 77).save(gray_path)
    assert probe_image(path) == ImageInfo(format="JPEG", mode="RGB", width=40, height=30)
    assert not is_grayscale(probe_image(path)) and is_grayscale(probe_image(gray_path))
    rgb = _check(decode_image(path, 3), (30, 40, 3))
    gray = _check(decode_image(path, 1), (30, 40, 1))
    assert np.allclose(rgb[15, 20], (200, 30, 30), atol=4)
    luma = 0.299 * 200 + 0.587 * 30 + 0.114 * 30  # PIL "L" (ITU-R 601-2)
    assert abs(int(gray[15, 20, 0]) - luma) <= 4
    replicated = _check(decode_image(gray_path, 3), (6, 8, 3))
    assert (replicated == 77).all()


def test_truncated_files(tmp_path: Path) -> None:
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png")):
        full = tmp_path / f"full.{ext}"
        _noise(64, 64).save(full)
        cut = tmp_path / f"cut.{ext}"
        cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
        assert probe_image(cut).format == fmt  # the header survives: only decoding can tell
        assert _reason(cut) == f"truncated {fmt}"
        assert _reason(cut, channels=1, size=16) == f"truncated {fmt}"
    (head := tmp_path / "head.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:300])
    assert _reason(head) == "truncated JPEG"  # PIL fails before naming the format


def test_an_open_file_decodes_as_its_path_does(tmp_path: Path) -> None:
    """Uploads reach the decoder as open files (the server's spooled parts): same pixels, same reasons."""
    import io

    photo = tmp_path / "photo.jpg"
    _noise(300, 200).save(photo, quality=90)  # > 2x the size: the JPEG draft path
    with open(photo, "rb") as fp:
        fp.read(10)  # decoding starts from the beginning whatever was read before
        assert np.array_equal(decode_image(fp, 3, 64), decode_image(photo, 3, 64))
    data = photo.read_bytes()
    for content, reason in (
        (data[: len(data) // 2], "truncated JPEG"),
        (b"", "zero-byte file"),
        (b"just text" * 10, "not an image"),
    ):
        with pytest.raises(UnreadableImage, match=reason):
            decode_image(io.BytesIO(content), 3, 32)


def test_zero_byte_text_missing_and_foreign_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("these are not pixels\n" * 20)
    ppm = tmp_path / "x.png"  # a valid image, but not a format we open
    Image.new("RGB", (4, 4)).save(ppm, format="PPM")
    for path, reason in ((empty, "zero-byte file"), (text, "not an image"), (ppm, "not an image")):
        assert _reason(path).startswith(reason)
        with pytest.raises(UnreadableImage, match=reason):
            probe_image(path)
    assert _reason(tmp_path / "nope.png") == "no such file or directory"


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(path, quality=95)  # pure cyan
    assert probe_image(path) == ImageInfo("JPEG", "CMYK", 16, 16)
    arr = _check(decode_image(path, 3), (16, 16, 3))
    assert np.allclose(arr[8, 8], (0, 255, 255), atol=4)
    _check(decode_image(path, 1, size=8), (8, 8, 1))


def test_rgba_and_la_png_composited_onto_background(tmp_path: Path) -> None:
    path = tmp_path / "rgba.png"
    px = [[[255, 0, 0, 0], [0, 255, 0, 255]], [[0, 0, 255, 128], [10, 20, 30, 255]]]
    Image.fromarray(np.array(px, np.uint8), "RGBA").save(path)
    assert probe_image(path).mode == "RGBA"
    arr = _check(decode_image(path, 3), (2, 2, 3))
    assert arr[0, 0].tolist() == [255, 255, 255]  # fully transparent red -> white
    assert arr[0, 1].tolist() == [0, 255, 0]
    assert np.allclose(arr[1, 0], (127, 127, 255), atol=1)  # half blue over white
    assert decode_image(path, 3, background=(0, 0, 0))[0, 0].tolist() == [0, 0, 0]
    assert decode_image(path, 1)[0, 0, 0] == 255
    la = tmp_path / "la.png"
    Image.fromarray(np.array([[[0, 0], [100, 255]]], np.uint8), "LA").save(la)
    assert probe_image(la).mode == "LA" and is_grayscale(probe_image(la))
    assert _check(decode_image(la, 1), (1, 2, 1))[0, :, 0].tolist() == [255, 100]
    assert decode_image(la, 3, background=(0, 0, 0)).tolist() == [[[0, 0, 0], [100] * 3]]


def test_16bit_png_and_32bit_tiff(tmp_path: Path) -> None:
    png = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 32768, 65535, 257]], np.uint16)).save(png)
    assert probe_image(png).mode == "I;16" and is_grayscale(probe_image(png))
    gray = _check(decode_image(png, 1), (1, 4, 1))
    assert gray[0, :, 0].tolist() == [0, 128, 255, 1]  # divided by 257, not clipped
    assert decode_image(png, 3)[0, 1].tolist() == [128, 128, 128]
    tif = tmp_path / "int.tif"
    Image.fromarray(np.array([[-5, 32768, 70000]], np.int32)).save(tif)
    assert probe_image(tif).mode == "I"
    assert decode_image(tif, 1)[0, :, 0].tolist() == [0, 128, 255]


def test_float_tiff(tmp_path: Path) -> None:
    unit, wide = tmp_path / "unit.tif", tmp_path / "wide.tiff"
    Image.fromarray(np.array([[0.0, 0.5, 1.0, np.nan]], np.float32)).save(unit)
    Image.fromarray(np.array([[-5.0, 100.4, 254.6, 300.0]], np.float32)).save(wide)
    assert probe_image(unit) == ImageInfo("TIFF", "F", 4, 1) and is_grayscale(probe_image(unit))
    assert decode_image(unit, 1)[0, :, 0].tolist() == [0, 128, 255, 0]  # max <= 1: 0..1
    assert decode_image(wide, 1)[0, :, 0].tolist() == [0, 100, 255, 255]  # else clip


def test_palette_and_animated_gif(tmp_path: Path) -> None:
    gif = tmp_path / "pal.gif"
    im = Image.new("P", (4, 4), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    im.putpixel((1, 1), 1)
    im.save(gif, transparency=0)
    assert probe_image(gif) == ImageInfo("GIF", "P", 4, 4) and not is_grayscale(probe_image(gif))
    arr = _check(decode_image(gif, 3), (4, 4, 3))
    assert arr[0, 0].tolist() == [255, 255, 255]  # transparent index -> background
    assert arr[1, 1].tolist() == [0, 0, 255]
    png = tmp_path / "pal.png"
    Image.new("RGB", (6, 6), (0, 128, 0)).convert("P", palette=Image.Palette.ADAPTIVE).save(png)
    assert probe_image(png).mode == "P"
    assert decode_image(png, 3)[0, 0].tolist() == [0, 128, 0]
    anim = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(anim, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(anim) as im:
        assert im.n_frames == 3
    assert (_check(decode_image(anim, 3), (10, 10, 3)) == (255, 0, 0)).all()  # first frame


def test_exif_orientation_6(tmp_path: Path) -> None:
    path = tmp_path / "rot.jpg"
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 8, 8))  # mark the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored image rotated 90 degrees clockwise
    im.save(path, exif=exif.tobytes(), quality=95)
    assert probe_image(path) == ImageInfo("JPEG", "RGB", 20, 40)  # displayed size
    arr = _check(decode_image(path, 3), (40, 20, 3))
    assert arr[:6, -6:].mean() > 200  # clockwise: top-left moved to top-right
    assert arr[:6, :6].mean() < 50 and arr[-6:, -6:].mean() < 50


def test_bmp_webp_and_file_names(tmp_path: Path) -> None:
    src = _noise(12, 10, seed=3)
    for path, kwargs in ((tmp_path / "a.bmp", {}), (tmp_path / "a.webp", {"lossless": True})):
        src.save(path, **kwargs)
        assert probe_image(path) == ImageInfo(path.suffix[1:].upper(), "RGB", 10, 12)
        arr = _check(decode_image(path, 3), (12, 10, 3))
        assert (arr == np.asarray(src)).all()
    for name in ("ümlaut café 1.png", "really_png.jpg"):  # unicode; content beats extension
        Image.new("RGB", (9, 7), (5, 6, 7)).save(tmp_path / name, format="PNG")
        assert probe_image(tmp_path / name) == ImageInfo("PNG", "RGB", 9, 7)
        assert (decode_image(tmp_path / name, 3) == (5, 6, 7)).all()


def test_decompression_bomb_rejected_from_header(tmp_path: Path) -> None:
    path = _fake_png(tmp_path / "bomb.png", 100_000, 100_000)
    assert path.stat().st_size < 200
    assert "too large" in _reason(path, size=224)
    with pytest.raises(UnreadableImage, match="too large"):
        probe_image(path)
    # 90 Mpx: past PIL's warning threshold but under its error threshold, so our own
    # check rejects it, and PIL's DecompressionBombWarning must stay silent.
    big = _fake_png(tmp_path / "big.png", 10_000, 9_000)
    with warnings.catch_warnings(record=True) as caught:
        assert _reason(big) == "too large: 10000x9000 px (limit 89 Mpx)"
    assert caught == []
    Image.new("RGB", (100, 100)).save(small := tmp_path / "small.png")
    with pytest.raises(UnreadableImage, match=r"too large: 100x100 px \(limit 1000 px\)"):
        probe_image(small, max_pixels=1000)


def test_nothing_printed_in_fresh_process(tmp_path: Path) -> None:
    big = _fake_png(tmp_path / "big.png", 10_000, 9_000)
    lzw = tmp_path / "lzw.tif"
    _noise(40, 50).save(lzw, compression="tiff_lzw")
    data = bytearray(lzw.read_bytes())
    data[20:3000:5] = bytes(b ^ 0xFF for b in data[20:3000:5])  # garble the LZW strip only
    lzw.write_bytes(bytes(data))
    out = subprocess.run(
        [sys.executable, "-W", "always", "-c", _CHILD, str(big), str(lzw)],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": ":".join(sys.path)},
    )  # fmt: skip
    assert out.stdout.splitlines()[0] == "too large: 10000x9000 px (limit 89 Mpx)"
    assert out.stdout.splitlines()[1].startswith("corrupt TIFF")
    assert out.stderr == ""  # neither Python warnings nor libtiff's C-level messages


def test_resize_center_crop(tmp_path: Path) -> None:
    path = tmp_path / "thirds.png"
    stripes = np.zeros((30, 90, 3), np.uint8)
    stripes[:, :30], stripes[:, 30:60], stripes[:, 60:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    Image.fromarray(stripes).save(path)
    arr = _check(decode_image(path, 3, size=15), (15, 15, 3))
    # Only the centre third survives; the outermost columns blend a little with the
    # neighbouring stripes, exactly as resize-then-crop would (antialiasing support).
    assert (arr[:, 1:-1] == (0, 255, 0)).all() and (arr[:, [0, -1], 1] > 200).all()
    _check(decode_image(path, 1, size=40), (40, 40, 1))  # upscaling works too


def test_jpeg_draft_path_matches_full_decode(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    y, x = np.mgrid[0:400, 0:600]
    smooth = np.stack([x * 255 // 599, y * 255 // 399, np.full_like(x, 90)], -1)
    Image.fromarray(smooth.astype(np.uint8)).save(path, quality=95)
    with Image.open(path) as im:  # reference: full-size decode, then resize
        ref = im.resize((100, 100), Image.Resampling.BILINEAR, box=(100, 0, 500, 400))
    small = _check(decode_image(path, 3, size=100), (100, 100, 3))  # draft decodes at 1/2
    assert np.abs(small.astype(int) - np.asarray(ref)).mean() < 3
    gray = _check(decode_image(path, 1, size=100), (100, 100, 1))  # draft("L"): luma only
    assert np.abs(gray[..., 0].astype(int) - np.asarray(ref.convert("L"))).mean() < 3


def test_mutated_files_only_raise_unreadable(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    for fmt in ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"):
        src = tmp_path / f"src.{fmt.lower()}"
        _noise(24, 20).save(src, format=fmt)
        data = src.read_bytes()
        for i in range(15):
            bad = np.frombuffer(data, np.uint8).copy()
            bad[rng.integers(0, bad.size, 4)] = rng.integers(0, 256, 4)
            path = tmp_path / f"bad{i}.{fmt.lower()}"
            path.write_bytes(bad[: bad.size if i % 2 else rng.integers(1, bad.size)].tobytes())
            got = _decode_or_reason(path)  # anything but UnreadableImage would propagate
            assert got if isinstance(got, str) else _check(got, (32, 32, 3)) is got


def test_thread_pool_matches_serial(tmp_path: Path) -> None:
    paths = [tmp_path / f"img{i}.jpg" for i in range(12)]
    for i, path in enumerate(paths):
        _noise(48 + i, 64, seed=i).save(path)
    (tmp_path / "bad.jpg").write_bytes(paths[0].read_bytes()[:2000])
    paths.append(tmp_path / "bad.jpg")
    serial = [_decode_or_reason(p) for p in paths]
    assert serial[-1] == "truncated JPEG"
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(_decode_or_reason, paths * 3))
    for got, want in zip(threaded, serial * 3):
        assert got == want if isinstance(want, str) else (got == want).all()


def test_constants_and_bad_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert DEFAULT_MAX_PIXELS == 89_478_485 and ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert IMAGE_EXTENSIONS == {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
    path = tmp_path / "ok.png"
    Image.new("RGB", (4, 4)).save(path)
    for channels, size in ((2, None), (3, 0)):
        with pytest.raises(CnnlabError):
            decode_image(path, channels, size)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(CnnlabError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(path, 3)
