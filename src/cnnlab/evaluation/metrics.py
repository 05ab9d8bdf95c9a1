"""Test-set numbers: accuracy, per-class scores, confusion matrix, calibration, from scikit-learn.

:func:`compute_metrics` takes all probabilities at once; :class:`MetricAccumulator` takes them
batch by batch and keeps only counts, so it gives the same dict without holding N x K floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

from cnnlab.errors import CnnlabError

# Keras clips probabilities at 1e-7 in categorical cross-entropy; using the same bound keeps the
# loss comparable with the lesson's numbers and finite when a softmax underflows to 0.
NLL_EPS = 1e-7
ECE_BINS = 10


def _check(y_true: np.ndarray, probs: np.ndarray, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validates shapes and label range; returns int64 labels and float64 probabilities."""
    y = np.asarray(y_true).reshape(-1).astype(np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise CnnlabError(f"probabilities must have shape (N, K) with N = {y.shape[0]} labels, got {p.shape}")
    if num_classes is not None and p.shape[1] != num_classes:
        raise CnnlabError(f"probabilities have {p.shape[1]} columns but there are {num_classes} class names")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise CnnlabError(f"labels must be in 0..{p.shape[1] - 1}, got {int(y.min())}..{int(y.max())}")
    return y, p


def _nll(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-sample negative log-likelihood of the true class, probabilities clipped to [eps, 1]."""
    nll: np.ndarray = -np.log(np.clip(p[np.arange(y.shape[0]), y], NLL_EPS, 1.0))
    return nll


def _calibration_counts(y: np.ndarray, p: np.ndarray, bins: int) -> np.ndarray:
    """Per confidence bin: [count, sum of confidence, number correct] (shape bins x 3)."""
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    # Uniform bins on [0, 1]; confidence 1.0 falls in the last bin rather than an extra one.
    idx = np.minimum((conf * bins).astype(np.int64), bins - 1)
    out = np.zeros((bins, 3))
    np.add.at(out, idx, np.stack([np.ones_like(conf), conf, correct], axis=1))
    return out


def calibration_bins(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> dict[str, Any]:
    """Reliability-diagram data and expected calibration error (ECE) of the top-1 confidence.

    Returns:
        ``{"edges", "count", "confidence", "accuracy", "ece"}``; empty bins have NaN means.
    """
    y, p = _check(y_true, probs)
    return _calibration_from_counts(_calibration_counts(y, p, bins))


def _calibration_from_counts(c: np.ndarray) -> dict[str, Any]:
    """Turns summed bin counts into means and ECE (the count-weighted mean |accuracy - confidence|)."""
    count = c[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        conf, acc = c[:, 1] / count, c[:, 2] / count
    total = count.sum()
    ece = float(np.nansum(np.abs(acc - conf) * count) / total) if total else 0.0
    return {"edges": np.linspace(0, 1, len(c) + 1), "count": count, "confidence": conf, "accuracy": acc, "ece": ece}


def _plain(value: Any) -> Any:
    """Converts numpy scalars and containers to plain Python types for json.dump."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    return value


def _binary_auc(y: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC-AUC of the positive class, or None when only one class occurs (AUC is undefined)."""
    return float(skm.roc_auc_score(y, scores)) if np.unique(y).size == 2 else None


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """All test-set numbers from true labels and predicted class probabilities.

    Args:
        y_true: (N,) integer labels in 0..K-1.
        probs: (N, K) class probabilities (softmax outputs).
        class_names: K names, in label order.

    Returns:
        A JSON-serialisable dict: accuracy, top5_accuracy (K > 5), loss, balanced_accuracy,
        per_class, macro_avg, weighted_avg, confusion_matrix (rows = true), roc_auc (K == 2),
        ece, num_samples.
    """
    accumulator = MetricAccumulator(len(class_names), keep_hardest=0)
    accumulator.update(y_true, probs)
    return accumulator.compute(class_names)


def classification_report_text(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], digits: int = 3
) -> str:
    """scikit-learn's text classification report, every class listed even when absent."""
    labels = list(range(len(class_names)))
    report: str = skm.classification_report(
        np.asarray(y_true),
        np.asarray(y_pred),
        labels=labels,
        target_names=list(class_names),
        digits=digits,
        zero_division=0,
    )
    return report


def most_confused_pairs(
    cm: np.ndarray | list[list[int]], class_names: Sequence[str], k: int = 10
) -> list[tuple[str, str, int]]:
    """The k largest off-diagonal confusion counts as (true, predicted, count), largest first."""
    m = np.array(cm, dtype=np.int64)
    np.fill_diagonal(m, 0)
    flat = np.argsort(-m, axis=None, kind="stable")[:k]
    pairs = [(int(i), int(j)) for i, j in zip(*np.unravel_index(flat, m.shape))]
    return [(class_names[i], class_names[j], int(m[i, j])) for i, j in pairs if m[i, j] > 0]


class MetricAccumulator:
    """Streams (labels, probabilities) batches and computes every test-set number at the end.

    Keeps what the scores need without holding N x K floats: the true and predicted labels (for
    scikit-learn's scores), summed NLL, top-5 hits, calibration bin sums, the positive-class
    scores for binary ROC-AUC, and the ``keep_hardest`` highest-loss mistakes' indices.
    """

    def __init__(self, num_classes: int, keep_hardest: int = 25) -> None:
        self.num_classes = num_classes
        self.keep_hardest = keep_hardest
        self._true: list[np.ndarray] = []
        self._pred: list[np.ndarray] = []
        self.nll_sum = 0.0
        self.top5_hits = 0
        self.calib = np.zeros((ECE_BINS, 3))
        self._binary_scores: list[np.ndarray] = []
        self._hard = np.zeros((0, 5))  # columns: global index, loss, true, pred, confidence
        self.seen = 0

    def update(self, y_true_batch: np.ndarray, probs_batch: np.ndarray) -> None:
        """Adds one batch; sample indices continue from the previous batches."""
        y, p = _check(y_true_batch, probs_batch, self.num_classes)
        if y.size == 0:
            return  # e.g. the last, empty shard of a distributed loader
        pred = p.argmax(axis=1)
        self._true.append(y)
        self._pred.append(pred)
        nll = _nll(y, p)
        self.nll_sum += float(nll.sum())
        if self.num_classes > 5:
            self.top5_hits += int(
                skm.top_k_accuracy_score(y, p, k=5, labels=list(range(self.num_classes)), normalize=False)
            )
        if self.num_classes == 2:
            self._binary_scores.append(p[:, 1])
        self.calib += _calibration_counts(y, p, ECE_BINS)
        if self.keep_hardest:
            idx = np.arange(self.seen, self.seen + y.size)
            batch = np.stack([idx, nll, y, pred, p.max(axis=1)], axis=1)[pred != y]
            merged = np.concatenate([self._hard, batch])
            self._hard = merged[np.argsort(-merged[:, 1], kind="stable")[: self.keep_hardest]]
        self.seen += y.size

    def predictions(self) -> np.ndarray:
        """The predicted labels of every sample seen, in order."""
        return np.concatenate(self._pred) if self._pred else np.zeros(0, np.int64)

    def hardest(self) -> list[dict[str, Any]]:
        """Kept mistakes, highest loss first: {index, loss, true, pred, confidence}."""
        return [
            {"index": int(r[0]), "loss": float(r[1]), "true": int(r[2]), "pred": int(r[3]), "confidence": float(r[4])}
            for r in self._hard
        ]

    def compute(self, class_names: Sequence[str]) -> dict[str, Any]:
        """The metrics dict over every batch seen so far (see :func:`compute_metrics`)."""
        k = self.num_classes
        if len(class_names) != k:
            raise CnnlabError(f"{len(class_names)} class names given for {k} classes")
        if self.seen == 0:
            raise CnnlabError("no samples to evaluate: the test split is empty")
        y_true, y_pred, labels = np.concatenate(self._true), self.predictions(), list(range(k))
        prec, rec, f1, sup = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
        report = skm.classification_report(
            y_true, y_pred, labels=labels, target_names=[f"#{i}" for i in labels], output_dict=True, zero_division=0
        )
        present = sup > 0  # balanced accuracy averages recall over classes that occur in y_true
        out: dict[str, Any] = {
            "num_samples": self.seen,
            "accuracy": skm.accuracy_score(y_true, y_pred),
            "balanced_accuracy": float(rec[present].mean()) if present.any() else 0.0,
            "loss": self.nll_sum / self.seen,
            "per_class": {
                name: {"precision": prec[i], "recall": rec[i], "f1": f1[i], "support": sup[i]}
                for i, name in enumerate(class_names)
            },
            "macro_avg": report["macro avg"],
            "weighted_avg": report["weighted avg"],
            "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels),
            "ece": _calibration_from_counts(self.calib)["ece"],
        }
        if k > 5:
            out["top5_accuracy"] = self.top5_hits / self.seen
        if k == 2:
            out["roc_auc"] = _binary_auc(y_true, np.concatenate(self._binary_scores))
        plain: dict[str, Any] = _plain(out)
        return plain
