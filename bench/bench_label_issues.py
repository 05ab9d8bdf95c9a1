"""``cnnlab data label-issues`` on real photos: dtd10 as it is, and with 5% of its labels flipped on purpose.

Both runs use EfficientNet-Lite0's built-in ImageNet features and 5 folds. The flipped copy is a
CSV listing (path,label,split) of the same files with 60 of the 1,200 labels changed to another
class at random (seeded): precision and recall of the flipped images among the suspects, and
among the top 60. Copies the clean run's gallery to docs/figures/.

    python bench/bench_label_issues.py            # writes bench/out/label_issues.md
"""

from __future__ import annotations

import csv
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cnnlab  # noqa: E402
from common import dataset, write_page  # noqa: E402

FIGURES = Path(__file__).resolve().parent.parent / "docs" / "figures"
SHARE = 0.05
OPTIONS = {"model": "efficientnet_lite0", "pretrained": True}


def flipped_listing(root: Path, out: Path, seed: int = 0) -> set[str]:
    """A CSV of every image of ``root`` with SHARE of the labels changed; returns the changed paths."""
    files = sorted(
        (split.name, label.name, path)
        for split in root.iterdir()
        if split.is_dir()
        for label in split.iterdir()
        for path in label.iterdir()
    )
    classes = sorted({label for _, label, _ in files})
    rng = random.Random(seed)
    chosen = set(rng.sample(range(len(files)), round(SHARE * len(files))))
    changed = set()
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for index, (split, label, path) in enumerate(files):
            if index in chosen:
                label = rng.choice([c for c in classes if c != label])
                changed.add(str(path))
            writer.writerow([str(path), label, split])
    return changed


def shrink(source: Path, out: Path, width: int = 820) -> None:
    """The gallery for the README: narrower and in 256 colours (2.6 MB of photos become a few hundred KB)."""
    from PIL import Image

    with Image.open(source) as image:
        small = image.convert("RGB").resize((width, round(image.height * width / image.width)), Image.LANCZOS)
        small.quantize(256).save(out, optimize=True)


def main() -> None:
    root = dataset("dtd10")
    lines = [
        "| data | images | flagged | flipped | flipped among flagged (precision) | flipped found (recall) | "
        "flipped in the top 60 | time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        clean = cnnlab.label_issues(root, out=Path(tmp) / "clean", **OPTIONS)
        flagged = [r for r in clean.rows if r["issue"].startswith("label")]
        lines.append(f"| dtd10 as it is | {clean.images} | {len(flagged)} | - | - | - | - | {clean.seconds:.0f} s |")
        FIGURES.mkdir(parents=True, exist_ok=True)
        shrink(clean.files.gallery, FIGURES / "label_issues_dtd10.png")
        copies = [r for r in clean.rows if "copy under another label" in r["issue"]]
        listing = Path(tmp) / "flipped.csv"
        changed = flipped_listing(root, listing)
        noisy = cnnlab.label_issues(listing, out=Path(tmp) / "flipped", **OPTIONS)
        suspects = {r["path"] for r in noisy.rows if r["issue"].startswith("label")}
        top = {r["path"] for r in noisy.rows[: len(changed)]}
        hits = len(suspects & changed)
        lines.append(
            f"| dtd10, {SHARE:.0%} flipped | {noisy.images} | {len(suspects)} | {len(changed)} | "
            f"{hits} ({hits / max(1, len(suspects)):.0%}) | {hits / len(changed):.0%} | "
            f"{len(top & changed)} | {noisy.seconds:.0f} s |"
        )
    write_page(
        "label_issues",
        "Label issues on real photos",
        "python bench/bench_label_issues.py",
        f"EfficientNet-Lite0's ImageNet features, 5-fold logistic regression, cleanlab's find_label_issues. "
        f"On dtd10 as it is, {len(flagged)} images are flagged (the gallery in docs/figures shows the first "
        f"24) and {len(copies)} are copies of a picture under another label. Precision counts only the flipped "
        "images as right: the set's own suspects count against it.",
        lines,
    )


if __name__ == "__main__":
    main()
