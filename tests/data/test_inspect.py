"""``cnnlab data inspect``/``list``/``cache``: the data doctor's table, JSON and figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from messy import BAD, GOOD_PER_CLASS, ODD_BUT_FINE, noise, write_messy_folder
from PIL import Image, ImageDraw, ImageEnhance

from cnnlab.data.inspect import inspect_data
from conftest import png_size, write_photo_crops


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    return write_messy_folder(tmp_path / "messy")


def test_report_counts_skips_duplicates_and_leakage(messy):
    report = inspect_data(messy, decode=True).report
    train, test = report["splits"]["train"], report["splits"]["test"]
    assert train["classes"]["cat"]["count"] == GOOD_PER_CLASS + len(ODD_BUT_FINE)
    assert train["classes"]["dog"]["count"] == GOOD_PER_CLASS + 2  # nested + duplicate
    assert train["classes"]["cat"]["skipped"] == len(BAD)
    assert test["count"] == 9 and test["classes"]["cat"]["count"] == 5
    assert {Path(s["path"]).name: s["reason"] for s in report["skipped"]}.keys() == BAD.keys()
    cat = train["classes"]["cat"]
    assert set(cat["formats"]) == {"PNG", "JPEG", "GIF"} and {"CMYK", "RGBA", "I;16", "P"} <= set(cat["modes"])
    assert cat["size"] == {"min": "12x20", "median": "16x16", "max": "16x16"}  # by pixel count
    [dup] = report["duplicates"]
    assert dup["split"] == "train" and sorted(Path(p).name for p in dup["paths"]) == ["dup_of_0.png", "img_0.png"]
    [leak] = report["leakage"]
    assert sorted((f["split"], Path(f["path"]).name) for f in leak["files"]) == [
        ("test", "leak.png"),
        ("train", "img_0.png"),
    ]
    assert report["imbalance"]["train"] == round(17 / 12, 2)
    # among noise pictures, the flat red CMYK square and the red square on white are placeholders
    blank = {Path(b["path"]).name: b["reason"] for b in report["near_blank"]}
    assert blank.keys() == {"cmyk.jpg", "rgba.png"}
    assert blank["cmyk.jpg"].startswith("blank: one flat colour") and "2 colours" in blank["rgba.png"]
    assert report["verdict"].startswith("4 problems: 4 files skipped")
    assert "leakage" in report["verdict"] and "duplicate" in report["verdict"]


def test_every_check_decodes_so_a_truncated_file_is_found_without_decode(messy):
    report = inspect_data(messy).report
    assert {Path(s["path"]).name for s in report["skipped"]} == set(BAD)


def test_cli_table_json_and_figures(cli, messy, tmp_path):
    code, out, _ = cli("data", "inspect", messy, "--out", tmp_path / "figs", "--decode")
    assert code == 0
    for fragment in (
        "cat",
        "dog",
        "skipped files (4)",
        "leak.png",
        "dup_of_0.png",
        "verdict: 4 problems",
        "zero-byte",
        "blank or near-blank images (2)",
        "exact copies",
    ):
        assert fragment in out, fragment
    for name in ("samples.png", "class_counts.png", "suspects.png"):
        assert (tmp_path / "figs" / name).stat().st_size > 1000 and name in out
    code, out, _ = cli("data", "inspect", messy, "--format", "json", "--strict")
    assert code == 1
    report = json.loads(out)
    assert report["images"] == 12 + 17 + 9
    assert len(report["leakage"]) == 1 and report["verdict"] == "4 problems: " + "; ".join(report["problems"])


def test_clean_folder_is_ok_and_conflicting_labels_are_found(tmp_path, capsys):
    for c in ("a", "b"):
        (tmp_path / "clean" / c).mkdir(parents=True)
        for i in range(12):
            noise(i + (0 if c == "a" else 50)).save(tmp_path / "clean" / c / f"{i}.png")
    assert inspect_data(tmp_path / "clean").report["verdict"] == "OK"
    noise(0).save(tmp_path / "clean" / "b" / "same_as_a0.png")
    report = inspect_data(tmp_path / "clean").report
    assert len(report["conflicts"]) == 1 and "under different labels" in report["verdict"]
    assert "held-out val/test may get copies" not in report["verdict"]  # a conflict, not a duplicate


def test_data_list_and_errors(cli, tmp_path):
    code, out, _ = cli("data", "list")
    assert code == 0
    assert all(name in out for name in ("mnist-sample", "digits", "synthetic-colors", "cifar10", "online"))
    code, _, err = cli("data", "inspect", tmp_path / "nope")
    assert code == 2 and "not found" in err
    code, _, err = cli("data", "cache", tmp_path, "--image-size", "4")
    assert code == 2 and "--image-size must be between 8 and 4096, got 4" in err  # train's check


def test_data_cache_warms_the_cache_for_training(cli, messy):
    code, out, _ = cli("data", "cache", messy, "--image-size", "16")
    assert code == 0
    assert "cached 38 images at 16x16, 3 channels" in out and "4 unreadable" in out
    code, out, _ = cli("data", "cache")
    assert code == 0 and "38 images" in out
    assert cli("data", "cache", "--clear")[0] == 0


def test_data_cache_for_a_pretrained_model_warms_what_its_training_reads(cli, messy, counted):
    """Lite0's run stores 256 px (224 / crop_pct 0.875) in RGB: the cache must hold that, not 224."""
    from cnnlab.config import DataConfig
    from cnnlab.data.prepare import prepare_data
    from cnnlab.models import model_input

    code, out, _ = cli("data", "cache", messy, "--model", "efficientnet_lite0", "--pretrained")
    assert code == 0 and "cached 38 images at 256x256, 3 channels" in out
    counted.clear()
    prepare_data(DataConfig(source=str(messy)), 0, model_input("efficientnet_lite0", True))
    assert sorted(counted) == sorted(BAD)  # only the unreadable files are tried again: the rest came from the cache


def test_data_cache_builds_the_record_store_and_clear_removes_it(cli, messy):
    code, out, _ = cli("data", "cache", messy, "--image-size", "16", "--image-store", "disk")
    assert code == 0 and "cached 38 images at 16x16" in out and "records" in out
    code, out, _ = cli("data", "cache")
    assert code == 0 and "2 record stores" in out and "0 images" in out  # one per split; no SQLite entries
    assert cli("data", "cache", "--clear")[0] == 0
    assert "0 record stores" in cli("data", "cache")[1]


def _placeholder(path: Path, size: int = 300) -> None:
    """A 'no image' placeholder: a light field with a small grey picture icon and a line of text, as a GIF."""
    image = Image.new("RGB", (size, size), (236, 236, 236))
    draw = ImageDraw.Draw(image)
    draw.rectangle((size * 2 // 5, size * 2 // 5, size * 3 // 5, size // 2), fill=(170, 170, 170))
    draw.text((size // 3, size * 3 // 5), "no image", fill=(90, 90, 90))
    image.convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(path)


def _changed_copy(source: Path, target: Path, scale: float, brightness: float, quality: int) -> None:
    """The same photo resized, brightened and saved again as JPEG: bytes differ, the picture does not."""
    image = Image.open(source).convert("RGB")
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    ImageEnhance.Brightness(image).enhance(brightness).save(target, quality=quality)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Real, different photos (crops of two scikit-learn pictures) in train/ and test/ split folders."""
    write_photo_crops(tmp_path / "photos" / "train", per_class=12, seed=0)
    write_photo_crops(tmp_path / "photos" / "test", per_class=4, seed=1)
    return tmp_path / "photos"


def test_real_different_photos_are_not_flagged(photos):
    report = inspect_data(photos).report
    assert report["verdict"] == "OK", report["verdict"]
    assert not report["near_blank"] and not report["duplicates"] and not report["leakage"] and not report["notes"]


def test_placeholder_near_copies_under_two_labels_and_a_leak_are_found_with_reasons(cli, photos, tmp_path):
    train, test = photos / "train", photos / "test"
    _placeholder(train / "temple" / "placeholder.gif")  # trains as a temple
    _changed_copy(train / "temple" / "000.jpg", train / "flower" / "copy.jpg", 0.8, 1.02, 75)
    _changed_copy(train / "flower" / "005.jpg", test / "flower" / "leak.jpg", 0.9, 1.0, 85)
    report = inspect_data(photos).report
    [blank] = report["near_blank"]
    assert Path(blank["path"]).name == "placeholder.gif" and blank["label"] == "temple"
    assert blank["reason"].startswith("near-blank: one colour covers") and "entropy 0." in blank["reason"]
    [conflict] = report["conflicts"]
    assert {(f["label"], Path(f["path"]).name) for f in conflict["files"]} == {
        ("temple", "000.jpg"),
        ("flower", "copy.jpg"),
    }
    assert conflict["reason"].startswith("near copies (")
    first, other = conflict["files"]  # each file said against the group's first
    assert first["reason"] == "the first of the group"
    assert other["reason"].startswith("near copy: ") and other["bits"] <= 6
    [leak] = report["leakage"]
    assert {(f["split"], Path(f["path"]).name) for f in leak["files"]} == {("train", "005.jpg"), ("test", "leak.jpg")}
    verdict = report["verdict"]
    assert verdict.startswith("3 problems") and "near-blank" in verdict and "leakage" in verdict
    assert "under different labels: keep the one with the right label" in verdict
    code, out, _ = cli("data", "inspect", photos, "--out", tmp_path / "figs")
    assert code == 0 and "placeholder.gif" in out and "near-blank: one colour covers" in out
    assert png_size(tmp_path / "figs" / "suspects.png")[1] > 3 * 150  # a row per finding: 3 rows
    assert "the same perceptual hash" in out or "bits apart" in out


def test_one_placeholder_filed_under_every_class_is_one_group(photos):
    """The same placeholder (once resized) in both classes and in test: one picture, three files."""
    _placeholder(photos / "train" / "temple" / "missing.gif")
    _placeholder(photos / "train" / "flower" / "missing.gif", size=240)
    _placeholder(photos / "test" / "flower" / "missing.gif")
    report = inspect_data(photos).report
    assert len(report["near_blank"]) == 3
    [conflict] = report["conflicts"]
    assert len(conflict["files"]) == 3 and conflict["reason"].endswith("(a placeholder?)")
    assert report["leakage"] == [conflict]


def test_near_copies_are_not_searched_among_digit_like_pictures(tmp_path):
    """Strokes on black hold little: different digits share a perceptual hash, so only exact copies count."""
    for label in ("one", "seven"):
        (tmp_path / "digits" / label).mkdir(parents=True)
        for i in range(12):  # every stroke a different length and place
            image = np.zeros((28, 28), np.uint8)
            top, column = 2 + i % 4, 9 + i // 4 * 3
            image[top : 26 - i % 3, column : column + 3] = 255
            if label == "seven":
                image[top : top + 3, 5 : column + 3] = 255
            Image.fromarray(image).save(tmp_path / "digits" / label / f"{i}.png")
    report = inspect_data(tmp_path / "digits").report
    assert not report["near_blank"] and not report["duplicates"]
    assert report["notes"][0].startswith("near copies not searched: the images hold little")


def test_the_preview_is_the_whole_picture_with_its_exact_colours(tmp_path):
    from cnnlab.data.decode import UnreadableImage, decode_preview

    stripes = np.zeros((300, 600, 3), np.uint8)
    stripes[:, ::2] = (255, 0, 0)  # 1 px stripes: averaging would turn them into one dark red
    Image.fromarray(stripes).save(tmp_path / "stripes.png")
    preview = decode_preview(tmp_path / "stripes.png", 128)
    assert preview.shape == (64, 128, 3)  # not centre-cropped: the aspect stays
    assert {tuple(c) for c in preview.reshape(-1, 3)} <= {(0, 0, 0), (255, 0, 0)}
    (tmp_path / "cut.png").write_bytes((tmp_path / "stripes.png").read_bytes()[:-300])
    with pytest.raises(UnreadableImage, match=r"truncated|corrupt"):
        decode_preview(tmp_path / "cut.png", 128)
