"""``cnnlab data label-issues``: flipped labels ranked first, a picture under two labels found."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from conftest import png_size, read_json, write_photo_crops, write_shapes_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PER_CLASS = 40
FLIPPED = 6  # 5% of 120 images moved to another class's folder


@pytest.fixture(scope="module")
def noisy(tmp_path_factory) -> tuple[Path, set[str], tuple[str, str]]:
    """Three classes of bars, 6 images moved under a wrong label, and one picture copied under a second label."""
    root = write_shapes_folder(tmp_path_factory.mktemp("noisy") / "shapes", per_class=PER_CLASS, seed=3)
    classes = ["left", "middle", "right"]
    flipped = set()
    for i in range(FLIPPED):
        source = root / classes[i % 3] / f"img_{i:03d}.png"
        target = root / classes[(i + 1) % 3] / f"flipped_{i}.png"
        source.rename(target)
        flipped.add(str(target))
    original = root / "left" / "img_039.png"
    copy = root / "middle" / "copy_of_left_39.png"
    shutil.copy(original, copy)
    return root, flipped, (str(original), str(copy))


def test_flipped_labels_rank_first_and_a_picture_under_two_labels_is_found(cli, noisy, tmp_path):
    data, flipped, pair = noisy
    code, out, err = cli(
        "data",
        "label-issues",
        data,
        "--epochs",
        "8",
        "--batch-size",
        "16",
        "--folds",
        "4",
        "--out",
        tmp_path / "issues",
        "--copy-to",
        tmp_path / "review",
    )
    assert code == 0, err
    with open(tmp_path / "issues" / "label_issues.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    labelled = [r for r in rows if r["issue"].startswith("label")]
    found = {r["path"] for r in labelled}
    recall = len(found & flipped) / len(flipped)
    precision = len(found & flipped) / max(1, len(found))
    top = {r["path"] for r in rows[:FLIPPED]}
    print(
        f"flagged {len(found)}: precision {precision:.2f}, recall {recall:.2f}; top {FLIPPED}: "
        f"{len(top & flipped)} flipped"
    )
    assert recall >= 0.8 and precision >= 0.5
    assert len(top & flipped) >= FLIPPED - 2  # most flipped images are the very first suspects
    by_path = {r["path"]: r for r in rows}
    assert all(by_path[p]["suggested_label"] != by_path[p]["given_label"] for p in found & flipped)
    copies = [r for r in rows if "copy under another label" in r["issue"]]
    assert {pair[0], pair[1]} <= {r["path"] for r in copies}
    assert "exact copy" in by_path[pair[0]]["issue"] and "'middle'" in by_path[pair[0]]["issue"]
    png_size(tmp_path / "issues" / "label_issues.png")
    page = (tmp_path / "issues" / "label_issues.html").read_text()
    assert "data:image/png;base64," in page and "cleanlab" in page
    summary = read_json(tmp_path / "issues" / "label_issues.json")
    assert summary["images"] == 3 * PER_CLASS + 1 and summary["folds"] == 4
    assert len(list((tmp_path / "review").rglob("*.png"))) == len(rows)  # copied for review
    assert all(Path(p).is_file() for p in flipped)  # nothing moved or deleted
    assert "probable label errors" in out


def test_bad_input_is_a_one_line_error(cli, tmp_path):
    code, _, err = cli("data", "label-issues", "digits", "--copy-to", tmp_path / "x")
    assert code == 2 and "--copy-to" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("data", "label-issues", tmp_path / "missing")
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_a_resized_brighter_copy_under_another_label_is_a_near_copy(tmp_path):
    import numpy as np
    import torch
    import torch.nn.functional as F

    from cnnlab.cleaning.duplicates import find_conflicts
    from cnnlab.data.types import ImageSet

    photos = write_photo_crops(tmp_path / "photos", per_class=6, side=64)
    from PIL import Image

    files = sorted(photos.rglob("*.jpg"))
    arrays = [np.array(Image.open(f).convert("RGB")) for f in files]
    original = torch.from_numpy(arrays[0]).permute(2, 0, 1)[None].float()
    copy = F.interpolate(F.interpolate(original, size=40, mode="bilinear"), size=64, mode="bilinear") * 1.15
    images = torch.cat([torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2), copy.clamp(0, 255).to(torch.uint8)])
    labels = torch.tensor([0] * 6 + [1] * 6 + [1])  # the copy sits under the other class
    conflicts, note = find_conflicts(ImageSet(images, labels, [f"img{i}" for i in range(13)]))
    assert note is None
    assert [(c.first, c.second) for c in conflicts] == [(0, 12)]  # the other photos are no copies
    assert not conflicts[0].exact and conflicts[0].bits <= 6 and conflicts[0].reason.startswith("near copy")


def test_the_doctor_and_label_issues_hash_alike():
    """One implementation: the hash of a picture is the same from a file (the doctor) and from the decoded
    pixels (label-issues), and it is imagehash's pHash (checked against scipy's DCT)."""
    import io

    import numpy as np
    import scipy.fftpack
    from PIL import Image

    from cnnlab.data.inspect import look_at_preview
    from cnnlab.data.similar import look_at

    picture = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    picture[20:60, 30:70] = (250, 200, 40)  # a shape: low frequencies to hash
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, "PNG")
    assert look_at_preview(buffer).phash == look_at(picture).phash
    gray = np.asarray(Image.fromarray(picture).convert("L").resize((32, 32), Image.Resampling.LANCZOS), float)
    low = scipy.fftpack.dct(scipy.fftpack.dct(gray, axis=0), axis=1)[:8, :8]
    assert look_at(picture).phash == int("".join("1" if b else "0" for b in (low > np.median(low)).ravel()), 2)
