"""``cnnlab data label-issues``: images whose label is probably wrong, for a person to look at.

Out-of-sample probabilities for every image (``cleanlab.oof``: k-fold), ranked by confident
learning (``cleanlab.filter.find_label_issues``, ordered by self-confidence: the probability
the model gives the label the image has), plus exact and near copies of one picture under
different labels. Writes a CSV, a gallery PNG and an HTML page; nothing is moved or deleted
(``--copy-to`` copies the suspects into a review folder).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.cleaning.duplicates import Conflict, find_conflicts
from cnnlab.cleaning.oof import (
    all_images,
    features_of,
    fold_of,
    probabilities_from_features,
    probabilities_from_training,
    split_names,
)
from cnnlab.config import RunConfig
from cnnlab.data.normalize import Normalize
from cnnlab.data.sources import BUILTIN_NAMES
from cnnlab.data.types import ImageSet
from cnnlab.errors import CnnlabError, plural
from cnnlab.figures import grid_shape, new_figure, save_figure, short, show_image
from cnnlab.io import atomic_write_text
from cnnlab.markup import escape, table
from cnnlab.models.heads import splits_into_features_and_head
from cnnlab.training.optim import apply_threads
from cnnlab.training.run_dir import claim_folder, default_name
from cnnlab.training.start import prepare_inputs

log = logging.getLogger("cnnlab")

FOLDS = 5
GALLERY = 24  # suspects drawn in the gallery
HTML_ROWS = 200  # rows of the CSV repeated on the page
COLUMNS = [
    "rank",
    "path",
    "split",
    "given_label",
    "suggested_label",
    "confidence",
    "given_label_probability",
    "label_quality",
    "issue",
]


@dataclass(frozen=True)
class IssueFiles:
    """What label-issues writes into its folder."""

    root: Path

    @property
    def csv(self) -> Path:
        return self.root / "label_issues.csv"

    @property
    def gallery(self) -> Path:
        return self.root / "label_issues.png"

    @property
    def page(self) -> Path:
        return self.root / "label_issues.html"

    @property
    def summary(self) -> Path:
        return self.root / "label_issues.json"


@dataclass
class LabelIssues:
    """The suspects, best first (one dict per CSV row), and how they were found."""

    rows: list[dict[str, Any]]
    files: IssueFiles
    method: str
    images: int
    folds: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.files.root

    @property
    def table(self) -> Any:
        """The rows as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=COLUMNS)

    def summary(self) -> dict[str, Any]:
        labels = sum(1 for r in self.rows if r["issue"].startswith("label"))
        return {
            "images": self.images,
            "folds": self.folds,
            "method": self.method,
            "label_issues": labels,
            "copies_under_other_labels": len(self.rows) - labels,
            "seconds": round(self.seconds, 1),
            "notes": self.notes,
        }


def _out_folder(config: RunConfig, out: str | Path | None) -> IssueFiles:
    if out is not None:
        root = Path(out).expanduser()
        root.mkdir(parents=True, exist_ok=True)
        return IssueFiles(root)
    return IssueFiles(claim_folder(Path("label-issues"), default_name(config), "label-issues", "--out"))


def _probabilities(config: RunConfig, out_of: Any, images: ImageSet, folds: np.ndarray) -> tuple[np.ndarray, str]:
    data, preprocess, model = out_of
    count = int(folds.max()) + 1
    if (config.model.pretrained or config.model.weights) and splits_into_features_and_head(model):
        features = features_of(model, images, Normalize.of(preprocess))
        probs = probabilities_from_features(features, images.labels.numpy(), folds, data.num_classes, config.train.seed)
        start = "ImageNet weights" if config.model.pretrained else f"weights {config.model.weights}"
        return probs, (
            f"{count}-fold cross-validated logistic regression on {config.model.name}'s pooled features "
            f"({start}, frozen)"
        )
    probs = probabilities_from_training(config, data, images, folds, preprocess)
    return probs, (
        f"{count}-fold cross-validation: {config.model.name} trained from scratch for each fold, "
        f"{plural(config.train.epochs, 'epoch')}"
    )


def _rows(
    images: ImageSet, splits: list[str], names: list[str], probs: np.ndarray, conflicts: list[Conflict]
) -> list[dict[str, Any]]:
    from cleanlab.filter import find_label_issues as confident_learning
    from cleanlab.rank import get_label_quality_scores

    labels = images.labels.numpy()
    ranked = confident_learning(labels, probs, return_indices_ranked_by="self_confidence")
    quality = get_label_quality_scores(labels, probs)
    copies: dict[int, list[str]] = {}
    for conflict in conflicts:
        kind = "exact copy" if conflict.exact else f"near copy (perceptual hash {conflict.bits} of 64 bits apart)"
        for here, there in ((conflict.first, conflict.second), (conflict.second, conflict.first)):
            copies.setdefault(here, []).append(f"{kind} of {images.ids[there]} labelled '{names[labels[there]]}'")
    suspects = [int(i) for i in ranked]
    flagged = set(suspects)
    order = suspects + [i for i in sorted(copies) if i not in flagged]
    rows = []
    for rank, index in enumerate(order, 1):
        suggested = int(probs[index].argmax())
        issue = ["label: the model says it looks like another class"] if index in flagged else []
        issue += [f"copy under another label: {text}" for text in copies.get(index, [])]
        rows.append(
            {
                "rank": rank,
                "path": images.ids[index],
                "split": splits[index],
                "given_label": names[labels[index]],
                "suggested_label": names[suggested],
                "confidence": round(float(probs[index, suggested]), 4),
                "given_label_probability": round(float(probs[index, labels[index]]), 4),
                "label_quality": round(float(quality[index]), 4),
                "issue": "; ".join(issue),
                "_index": index,
            }
        )
    return rows


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def draw_gallery(images: ImageSet, rows: list[dict[str, Any]], out: Path, count: int = GALLERY) -> Path | None:
    """The top suspects, each with its given and suggested label (or the copy it conflicts with)."""
    shown = rows[:count]
    if not shown:
        return None
    grid_rows, cols = grid_shape(len(shown), max_cols=6)
    fig = new_figure(max(2.1 * cols, 6.5), 2.5 * grid_rows + 0.3)
    pictures = images.take([row["_index"] for row in shown]).numpy()
    for place, (row, picture) in enumerate(zip(shown, pictures)):
        ax = fig.add_subplot(grid_rows, cols, place + 1)
        if row["issue"].startswith("label"):
            title = (
                f"#{row['rank']} given: {short(row['given_label'], 14)}\nlooks like: "
                f"{short(row['suggested_label'], 14)} ({row['confidence']:.0%})"
            )
        else:
            title = f"#{row['rank']} given: {short(row['given_label'], 14)}\nthe same picture, other label"
        show_image(ax, picture, title, color="#8b0000")
    return save_figure(fig, out, "Probable label errors: given label vs the model's")


def _write_page(result: LabelIssues, source: str) -> None:
    from cnnlab.figures import png_html

    info = result.summary()
    rows = [
        [
            r["rank"],
            r["path"],
            r["split"],
            r["given_label"],
            r["suggested_label"],
            f"{r['confidence']:.2f}",
            f"{r['given_label_probability']:.2f}",
            r["issue"],
        ]
        for r in result.rows[:HTML_ROWS]
    ]
    notes = "".join(f"<p><i>{escape(n)}</i></p>" for n in result.notes)
    body = (
        f"<h1>Label issues in {escape(source)}</h1><p>{info['label_issues']} of {result.images} images are "
        f"probably mislabelled and {info['copies_under_other_labels']} more are copies of a picture under "
        "another label. "
        f"Found by confident learning (cleanlab) on out-of-sample probabilities: {escape(result.method)}. "
        f"Nothing was moved or deleted.</p>{notes}<section id='gallery'><h2>The top suspects</h2>"
        f"{png_html([result.files.gallery]) if result.files.gallery.is_file() else ''}</section>"
        f"<section id='table'><h2>Suspects ({min(len(rows), HTML_ROWS)} of {len(result.rows)}; all in "
        f"{result.files.csv.name})</h2>"
        + table(["#", "path", "split", "given", "suggested", "confidence", "p(given)", "why"], rows, [0, 5, 6])
        + "</section>"
    )
    style = (
        "body{font:15px/1.45 system-ui,sans-serif;max-width:1150px;margin:0 auto;padding:1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}"
    )
    atomic_write_text(
        result.files.page,
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Label "
        f"issues</title><style>{style}</style></head><body>{body}</body></html>\n",
    )


def copy_suspects(rows: list[dict[str, Any]], folder: Path) -> int:
    """Copies each suspect file to ``folder/<given>__looks_like__<suggested>/`` (originals stay)."""
    done = 0
    for row in rows:
        source = Path(row["path"])
        if not source.is_file():
            raise CnnlabError(f"--copy-to copies image files; '{row['path']}' is not one (a built-in set has none)")
        target = folder / f"{row['given_label']}__looks_like__{row['suggested_label']}"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / f"{row['rank']:04d}-{source.name}")
        done += 1
    return done


def find_label_issues(
    config: RunConfig,
    out: str | Path | None = None,
    folds: int = FOLDS,
    gallery: int = GALLERY,
    copy_to: str | Path | None = None,
) -> LabelIssues:
    """Ranks every image of ``config.data`` by how likely its label is wrong; writes CSV, gallery and page.

    The data is decoded and the model built as ``cnnlab train`` with the same options would.

    Raises:
        CnnlabError: bad data or options (as train says), a class with fewer than 2 images, packed data.
    """
    if folds < 2:
        raise CnnlabError(
            f"--folds must be at least 2 (each image is scored by a model trained on the others), got {folds}"
        )
    if copy_to is not None and config.data.source in BUILTIN_NAMES:
        raise CnnlabError(f"--copy-to copies image files; the built-in set '{config.data.source}' has none")
    began = time.perf_counter()
    apply_threads(config.train)
    data, preprocess, model, _ = prepare_inputs(config)
    images = all_images(data)
    files = _out_folder(config, out)
    assignment = fold_of(images.labels.numpy(), folds, config.train.seed)
    probs, method = _probabilities(config, (data, preprocess, model), images, assignment)
    conflicts, note = find_conflicts(images)
    rows = _rows(images, split_names(data), data.class_names, probs, conflicts)
    result = LabelIssues(rows, files, method, len(images), int(assignment.max()) + 1, 0.0, [note] if note else [])
    _write_csv(rows, files.csv)
    draw_gallery(images, rows, files.gallery, gallery)
    if copy_to is not None:
        copied = copy_suspects(rows, Path(copy_to).expanduser())
        result.notes.append(f"{copied} suspect files copied to {copy_to} (the originals stay where they are)")
    result.seconds = time.perf_counter() - began
    atomic_write_text(files.summary, json.dumps(result.summary(), indent=2) + "\n")
    _write_page(result, config.data.source)
    return result
