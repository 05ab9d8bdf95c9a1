"""Which view suits the pretrained features: centre crop of a margin (crop_pct 0.875) or the whole square (1)?

    PYTHONPATH=src python bench/bench_crops_probe.py DATA [DATA ...] [--splits 20]

The whole-command comparison (bench_crops.py) has one seed per storage: on 240 test photos one photo
is 0.42 points, so a difference of a few photos is noise. This one removes most of that noise: per
folder and storage, ImageNet-pretrained EfficientNet-Lite0 (frozen) embeds every photo once, as
cnnlab stores and crops it; then a logistic regression (scikit-learn) is fitted on the same random
stratified 80/20 splits of both embeddings, ``--splits`` times, and the paired differences averaged.
For Imagenette, whose 10 classes are ImageNet classes, the network's own ImageNet prediction among
those 10 is scored too (no training at all). Not timed: no bench lock needed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_page  # noqa: E402

from cnnlab.data.crop import stored_side  # noqa: E402
from cnnlab.data.discover import discover  # noqa: E402
from cnnlab.data.folder import decode_files  # noqa: E402
from cnnlab.data.normalize import Normalize  # noqa: E402
from cnnlab.models.inference import run_batches  # noqa: E402

PCTS = (1.0, 0.875)
SIDE = 224
# Imagenette's folders (WordNet ids) and their ImageNet-1k class indices.
IMAGENETTE = {
    "n01440764": 0,
    "n02102040": 217,
    "n02979186": 482,
    "n03000684": 491,
    "n03028079": 497,
    "n03394916": 566,
    "n03417042": 569,
    "n03425413": 571,
    "n03445777": 574,
    "n03888257": 701,
}


def lite0() -> torch.nn.Module:
    import timm

    from cnnlab.models.lite0_offline import LITE0_TIMM_NAME, load_lite0_imagenet

    model = timm.create_model(LITE0_TIMM_NAME, pretrained=False, num_classes=1000)
    load_lite0_imagenet(model)
    return model.eval()


def embed(model: torch.nn.Module, folder: Path, pct: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(pooled features, ImageNet logits, labels, class names) of every photo of ``folder``, as stored at ``pct``."""
    listing = discover(folder)
    files = [(path, label) for split in listing.files.values() for path, label in split]
    names = sorted({label for _, label in files})
    decoded, _ = decode_files([(p, names.index(label)) for p, label in files], 3, stored_side(SIDE, pct), workers=2)
    normalize = Normalize([0.5] * 3, [0.5] * 3, SIDE if pct < 1 else None)

    def both(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        pooled = net.forward_head(net.forward_features(x), pre_logits=True)
        return torch.cat([pooled, net.classifier(pooled)], dim=1)

    out = torch.cat([chunk for _, chunk in run_batches(model, decoded.images, normalize, both, batch_size=64)])
    return out[:, :-1000].numpy(), out[:, -1000:].numpy(), decoded.labels.numpy(), names


def probe_scores(features: np.ndarray, labels: np.ndarray, splits: int) -> list[float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedShuffleSplit

    scores = []
    for train, test in StratifiedShuffleSplit(splits, test_size=0.2, random_state=0).split(features, labels):
        fit = LogisticRegression(max_iter=2000).fit(features[train], labels[train])
        scores.append(float(fit.score(features[test], labels[test])))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--splits", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = lite0()
    rows = []
    for folder in args.folders:
        got = {pct: embed(model, folder, pct) for pct in PCTS}
        scores = {pct: probe_scores(got[pct][0], got[pct][2], args.splits) for pct in PCTS}
        diffs = [100 * (b - a) for a, b in zip(scores[1.0], scores[0.875])]
        tested = round(0.2 * len(got[1.0][2]))
        zero = {}
        names = got[1.0][3]
        if set(names) <= set(IMAGENETTE):
            index = [IMAGENETTE[name] for name in names]
            zero = {pct: float((got[pct][1][:, index].argmax(1) == got[pct][2]).mean()) for pct in PCTS}
        zero_text = (
            f"{100 * zero[1.0]:.2f}% / {100 * zero[0.875]:.2f}% ({100 * (zero[0.875] - zero[1.0]):+.2f})"
            if zero
            else "—"
        )
        rows.append(
            f"| {folder.name} | {len(got[1.0][2])} | {100 * statistics.mean(scores[1.0]):.2f}% | "
            f"{100 * statistics.mean(scores[0.875]):.2f}% | {statistics.mean(diffs):+.2f} ± "
            f"{statistics.stdev(diffs) / len(diffs) ** 0.5:.2f} ({sum(d > 0 for d in diffs)} up, "
            f"{sum(d < 0 for d in diffs)} down of {len(diffs)}; {tested} test photos each) | {zero_text} |"
        )
        print(rows[-1], flush=True)
    command = " ".join(
        ["PYTHONPATH=src python bench/bench_crops_probe.py", *map(str, args.folders), "--splits", str(args.splits)]
    )
    intro = (
        "Frozen ImageNet EfficientNet-Lite0 features of every photo as stored with crop_pct 1 (the 224-px "
        "square) and 0.875 (the centre 224 px of the 256-px square, timm's eval view); a logistic regression "
        f"on {args.splits} paired random 80/20 stratified splits. Change: mean paired difference in points ± "
        "its standard error. Zero-shot: the network's ImageNet prediction among the 10 Imagenette classes, "
        "all photos, no training."
    )
    body = [
        "| data | photos | linear probe, pct 1 | linear probe, pct 0.875 | change (points) | "
        "zero-shot ImageNet, pct 1 / 0.875 |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    write_page(
        "crops_probe", "Centre crop of a margin vs the whole square: frozen pretrained features", command, intro, body
    )


if __name__ == "__main__":
    main()
