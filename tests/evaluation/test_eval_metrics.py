"""Metrics agree with scikit-learn, and the streaming accumulator agrees with the one-shot version."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from cnnlab.errors import CnnlabError
from cnnlab.evaluation.metrics import (
    MetricAccumulator,
    calibration_bins,
    classification_report_text,
    compute_metrics,
    most_confused_pairs,
)

NAMES3 = ["cat", "dog", "bird"]
# Five images of three classes; "bird" (2) never occurs as a true label but is predicted once.
Y3 = np.array([0, 0, 1, 1, 0])
P3 = np.array(
    [
        [0.7, 0.2, 0.1],  # cat, right
        [0.2, 0.3, 0.5],  # cat -> bird
        [0.1, 0.8, 0.1],  # dog, right
        [0.6, 0.3, 0.1],  # dog -> cat
        [0.5, 0.4, 0.1],  # cat, right
    ]
)


def assert_close(a, b, path="") -> None:
    """Recursive equality with float tolerance (sums in a different order differ in the last bits)."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), path
    else:
        assert a == b, path


def test_hand_made_predictions_match_sklearn_with_an_absent_class() -> None:
    m = compute_metrics(Y3, P3, NAMES3)
    pred = P3.argmax(axis=1)
    assert m["num_samples"] == 5
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(Y3, pred)) == pytest.approx(0.6)
    assert m["loss"] == pytest.approx(skm.log_loss(Y3, P3, labels=[0, 1, 2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that "bird" is predicted but never true
        assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(Y3, pred))
    assert m["confusion_matrix"] == [[2, 0, 1], [1, 1, 0], [0, 0, 0]]
    prec, rec, f1, sup = skm.precision_recall_fscore_support(Y3, pred, labels=[0, 1, 2], zero_division=0)
    for i, name in enumerate(NAMES3):
        assert m["per_class"][name] == pytest.approx(
            {"precision": prec[i], "recall": rec[i], "f1": f1[i], "support": sup[i]}
        )
    assert m["per_class"]["bird"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    report = skm.classification_report(Y3, pred, labels=[0, 1, 2], output_dict=True, zero_division=0)
    assert m["macro_avg"] == pytest.approx(report["macro avg"])
    assert m["weighted_avg"] == pytest.approx(report["weighted avg"])
    assert "top5_accuracy" not in m and "roc_auc" not in m
    assert json.loads(json.dumps(m)) == m  # plain, JSON-serialisable types only


def test_binary_roc_auc_and_top5() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    p1 = np.clip(0.3 * y + rng.uniform(0, 0.7, 60), 0, 1)
    m = compute_metrics(y, np.stack([1 - p1, p1], axis=1), ["neg", "pos"])
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p1))
    assert compute_metrics(np.zeros(3, int), np.array([[0.9, 0.1]] * 3), ["a", "b"])["roc_auc"] is None

    y7 = rng.integers(0, 7, 80)
    p7 = rng.dirichlet(np.ones(7), 80)
    m7 = compute_metrics(y7, p7, [f"c{i}" for i in range(7)])
    assert m7["top5_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y7, p7, k=5, labels=range(7)))
    assert 0.0 <= m7["ece"] <= 1.0


@pytest.mark.parametrize("k", [2, 4, 9])
def test_accumulator_agrees_with_compute_metrics(k: int) -> None:
    rng = np.random.default_rng(k)
    n = 157
    y = rng.integers(0, k, n)
    probs = rng.dirichlet(np.ones(k) * 0.5, n)
    names = [f"class{i}" for i in range(k)]
    acc = MetricAccumulator(k, keep_hardest=7)
    start = 0
    for size in (1, 50, 0, 33, 64, 9):  # uneven batches, an empty one, the last one short
        acc.update(y[start : start + size], probs[start : start + size])
        start += size
    assert start == n
    assert_close(acc.compute(names), compute_metrics(y, probs, names))

    # The kept examples are the 7 highest-loss misclassified ones, in order.
    nll = -np.log(np.clip(probs[np.arange(n), y], 1e-7, 1))
    wrong = np.flatnonzero(probs.argmax(axis=1) != y)
    expected = wrong[np.argsort(-nll[wrong], kind="stable")][:7]
    hardest = acc.hardest()
    assert [h["index"] for h in hardest] == expected.tolist()
    assert all(h["true"] != h["pred"] for h in hardest)
    assert hardest[0]["loss"] == pytest.approx(nll[expected[0]])


def test_report_text_pairs_and_calibration() -> None:
    pred = P3.argmax(axis=1)
    text = classification_report_text(Y3, pred, NAMES3)
    assert text == skm.classification_report(Y3, pred, labels=[0, 1, 2], target_names=NAMES3, digits=3, zero_division=0)
    assert "bird" in text
    cm = np.array([[5, 3, 0], [1, 4, 6], [0, 3, 2]])
    assert most_confused_pairs(cm, NAMES3, k=3) == [("dog", "bird", 6), ("cat", "dog", 3), ("bird", "dog", 3)]
    assert most_confused_pairs(np.eye(3, dtype=int), NAMES3) == []
    c = calibration_bins(Y3, P3, bins=5)
    assert c["count"].sum() == 5
    # Top-1 confidences 0.7, 0.5, 0.8, 0.6, 0.5. Bin [0.4, 0.6): the two 0.5s, one right -> 1/2.
    assert c["accuracy"][2] == pytest.approx(0.5) and c["confidence"][2] == pytest.approx(0.5)
    assert c["accuracy"][4] == 1.0 and c["confidence"][4] == pytest.approx(0.8)  # 0.8 is in [0.8, 1]
    assert np.isnan(c["accuracy"][0])  # empty bin


def test_bad_input_is_a_user_error() -> None:
    with pytest.raises(CnnlabError, match="columns"):
        compute_metrics(Y3, P3, ["a", "b"])
    with pytest.raises(CnnlabError, match="shape"):
        compute_metrics(Y3[:4], P3, NAMES3)
    with pytest.raises(CnnlabError, match="labels must be in"):
        compute_metrics(np.array([0, 3, 1, 1, 0]), P3, NAMES3)
    with pytest.raises(CnnlabError, match="empty"):
        compute_metrics(np.zeros(0, int), np.zeros((0, 3)), NAMES3)
    with pytest.raises(CnnlabError, match="empty"):
        MetricAccumulator(3).compute(NAMES3)
