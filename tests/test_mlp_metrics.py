"""Metrics on small cases whose answers are worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlp import metrics

# Three classes; class 2 is never predicted.
Y_TRUE = np.array([0, 0, 1, 1, 2, 2, 0])
Y_PRED = np.array([0, 1, 1, 1, 0, 0, 0])
# true 0 -> predicted 0, 1, 0;  true 1 -> 1, 1;  true 2 -> 0, 0
CONFUSION = [[2, 1, 0], [0, 2, 0], [2, 0, 0]]
# per class: precision = TP / column sum, recall = TP / row sum
PRECISION = [2 / 4, 2 / 3, 0.0]
RECALL = [2 / 3, 2 / 2, 0 / 2]
F1 = [2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3), 2 * (2 / 3) * 1 / (2 / 3 + 1), 0.0]  # 4/7, 4/5, 0


def test_confusion_matrix():
    cm = metrics.confusion_matrix(Y_TRUE, Y_PRED, 3)
    np.testing.assert_array_equal(cm, CONFUSION)
    assert np.issubdtype(cm.dtype, np.integer)
    assert cm.sum() == len(Y_TRUE)


def test_confusion_matrix_has_rows_for_classes_never_seen():
    cm = metrics.confusion_matrix(np.array([0, 1]), np.array([1, 1]), 4)
    np.testing.assert_array_equal(cm, [[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_top1_accuracy():
    assert metrics.top1_accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 7, rel=1e-15)
    assert metrics.top1_accuracy(Y_TRUE, Y_TRUE) == 1.0


def test_per_class_precision_recall_f1_with_a_class_never_predicted():
    report = metrics.per_class(Y_TRUE, Y_PRED, 3)
    np.testing.assert_allclose(report["precision"], PRECISION, rtol=1e-15)
    np.testing.assert_allclose(report["recall"], RECALL, rtol=1e-15)
    np.testing.assert_allclose(report["f1"], F1, rtol=1e-15)
    np.testing.assert_allclose(report["f1"][:2], [4 / 7, 4 / 5], rtol=1e-15)
    np.testing.assert_array_equal(report["support"], [3, 2, 2])


def test_macro_precision_recall_f1():
    macro = metrics.macro_precision_recall_f1(Y_TRUE, Y_PRED, 3)
    assert macro["macro_precision"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3, rel=1e-15)
    assert macro["macro_recall"] == pytest.approx((2 / 3 + 1 + 0) / 3, rel=1e-15)
    assert macro["macro_f1"] == pytest.approx((4 / 7 + 4 / 5 + 0) / 3, rel=1e-15)  # 16/35


def test_macro_average_counts_a_class_that_never_occurs_as_zero():
    """Class 3 is neither true nor predicted: its precision, recall and F1 are 0 (no NaN)."""
    y_true, y_pred = np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1])
    report = metrics.per_class(y_true, y_pred, 4)
    assert report["precision"][3] == report["recall"][3] == report["f1"][3] == 0.0
    assert report["support"][3] == 0
    macro = metrics.macro_precision_recall_f1(y_true, y_pred, 4)
    # precision 1, 1/2, 1, 0; recall 1, 1, 1/2, 0; F1 1, 2/3, 2/3, 0
    assert macro["macro_precision"] == pytest.approx((1 + 1 / 2 + 1 + 0) / 4)
    assert macro["macro_recall"] == pytest.approx((1 + 1 + 1 / 2 + 0) / 4)
    assert macro["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3 + 0) / 4)


def test_macro_f1_agrees_with_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 4, 200))  # 4 never predicted
    ours = metrics.macro_precision_recall_f1(y_true, y_pred, 5)
    kwargs = {"labels": range(5), "average": "macro", "zero_division": 0}
    assert ours["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(y_true, y_pred, **kwargs))
    assert ours["macro_precision"] == pytest.approx(
        sklearn_metrics.precision_score(y_true, y_pred, **kwargs)
    )
    assert ours["macro_recall"] == pytest.approx(
        sklearn_metrics.recall_score(y_true, y_pred, **kwargs)
    )
    np.testing.assert_array_equal(
        metrics.confusion_matrix(y_true, y_pred, 5),
        sklearn_metrics.confusion_matrix(y_true, y_pred, labels=range(5)),
    )


# Micro one-vs-rest (seed 002, eqs. 8 and 104-106): each row gives 3 binary decisions, positive
# when p > 0.5. The decisions are independent, so a row need not sum to 1.
OVR_TRUE = np.array([0, 1, 2, 0, 1, 2])
OVR_PROBS = np.array(
    [
        [0.7, 0.2, 0.1],  # decisions 1 0 0, true 0: TP, TN, TN
        [0.5, 0.4, 0.1],  # 0 0 0 (0.5 is not > 0.5), true 1: TN, FN, TN
        [0.1, 0.3, 0.6],  # 0 0 1, true 2: TN, TN, TP
        [0.2, 0.6, 0.2],  # 0 1 0, true 0: FN, FP, TN
        [0.51, 0.9, 0.3],  # 1 1 0, true 1: FP, TP, TN
        [0.2, 0.2, 0.2],  # 0 0 0, true 2: TN, TN, FN
    ]
)
TP, FP, FN, TN = 3, 2, 3, 10


def test_micro_one_vs_rest_counts_true_negatives_of_every_decision():
    assert TP + FP + FN + TN == OVR_PROBS.size
    result = metrics.micro_one_vs_rest(OVR_TRUE, OVR_PROBS)
    assert result["micro_accuracy"] == pytest.approx((TP + TN) / (TP + TN + FP + FN))  # 13/18
    assert result["micro_precision"] == pytest.approx(TP / (TP + FP))  # 3/5
    assert result["micro_recall"] == pytest.approx(TP / (TP + FN))  # 1/2


def test_micro_one_vs_rest_threshold_is_strict():
    # p = 0.5 is a negative decision: true class 0 missed (FN), class 1 rightly rejected (TN).
    result = metrics.micro_one_vs_rest(np.array([0]), np.array([[0.5, 0.5]]))
    assert result == pytest.approx(
        {"micro_accuracy": 0.5, "micro_precision": 0.0, "micro_recall": 0.0}
    )
    lower = metrics.micro_one_vs_rest(np.array([0]), np.array([[0.5, 0.5]]), threshold=0.4)
    # Both positive now: TP for class 0, FP for class 1.
    assert lower == pytest.approx(
        {"micro_accuracy": 0.5, "micro_precision": 0.5, "micro_recall": 1.0}
    )


def test_micro_accuracy_is_not_top1_accuracy():
    """Ten classes, every top-1 prediction wrong and no probability above 0.5: every decision is
    negative, so micro accuracy is 9/10 (the true negatives) while top-1 accuracy is 0."""
    probs = np.full((4, 10), 0.1)
    probs[:, 9] = 0.1 + 1e-3
    probs /= probs.sum(axis=1, keepdims=True)
    y_true = np.array([0, 1, 2, 3])
    report = metrics.classification_report(y_true, probs)
    assert report["top1_accuracy"] == 0.0
    assert report["micro_accuracy"] == pytest.approx(36 / 40)
    assert report["micro_recall"] == 0.0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cross_entropy_clips_a_zero_probability_to_eps(dtype):
    eps = float(np.finfo(dtype).eps)
    probs = np.array([[0.0, 0.5, 0.5], [0.2, 0.8, 0.0], [0.1, 0.1, 0.8]], dtype=dtype)
    y_true = np.array([0, 1, 2])
    expected = -(math.log(eps) + math.log(float(dtype(0.8))) * 2) / 3
    result = metrics.cross_entropy(y_true, probs)
    assert math.isfinite(result)
    assert result == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_of_certain_right_answers_is_about_zero():
    probs = np.eye(3)
    assert 0.0 <= metrics.cross_entropy(np.array([0, 1, 2]), probs) < 1e-12


def test_cross_entropy_is_the_mean_negative_log_probability():
    probs = np.array([[0.25, 0.75], [0.6, 0.4]])
    expected = -(math.log(0.75) + math.log(0.6)) / 2
    assert metrics.cross_entropy(np.array([1, 0]), probs) == pytest.approx(expected, rel=1e-14)


def test_classification_report_combines_everything():
    probs = OVR_PROBS
    report = metrics.classification_report(OVR_TRUE, probs)
    y_pred = probs.argmax(axis=1)  # 0, 0, 2, 1, 1, 0 -> right for rows 0, 2, 4
    assert report["top1_accuracy"] == pytest.approx(3 / 6)
    assert report["micro_accuracy"] == pytest.approx(13 / 18)
    assert report["cross_entropy"] == pytest.approx(
        -np.mean(np.log([0.7, 0.4, 0.6, 0.2, 0.9, 0.2]))
    )
    macro = metrics.macro_precision_recall_f1(OVR_TRUE, y_pred, 3)
    for key, value in macro.items():
        assert report[key] == value
    assert set(report) == {
        "cross_entropy",
        "top1_accuracy",
        "micro_accuracy",
        "micro_precision",
        "micro_recall",
        "macro_precision",
        "macro_recall",
        "macro_f1",
    }


def test_labels_must_be_one_dimensional():
    with pytest.raises(ValueError, match="1-D"):
        metrics.top1_accuracy(np.eye(3), np.array([0, 1, 2]))


@pytest.mark.parametrize("bad_prediction", [3, -1])
def test_confusion_matrix_rejects_labels_outside_the_classes(bad_prediction):
    """Regression: y_true * n + y_pred once silently counted 3 or -1 in a neighbouring cell."""
    with pytest.raises(ValueError, match=r"y_pred has labels in .* outside \[0, 3\)"):
        metrics.confusion_matrix(np.array([1, 1]), np.array([1, bad_prediction]), 3)
    with pytest.raises(ValueError, match=r"y_true has labels"):
        metrics.confusion_matrix(np.array([1, bad_prediction]), np.array([1, 1]), 3)
