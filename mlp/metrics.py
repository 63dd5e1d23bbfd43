"""Classification metrics on integer labels and predicted probabilities.

Two families:

* what people usually mean: top-1 accuracy, the confusion matrix, macro precision/recall/F1;
* the reference document's (seed 002, "Empirical results", eqs. 104-106): every row of predicted
  probabilities is turned into ``n_classes`` one-vs-rest binary decisions with a 0.5 threshold
  (eq. 8: positive when ``p > threshold``), and TP, FP, TN and FN are counted over all of them
  together (micro averaging). That "accuracy" counts the true negatives of all ten decisions, so it
  is not top-1 accuracy.
"""

from __future__ import annotations

import numpy as np


def _labels(y_true: np.ndarray) -> np.ndarray:
    y_true = np.asarray(y_true)
    if y_true.ndim != 1:
        raise ValueError(f"y_true must be 1-D integer labels, got shape {y_true.shape}")
    return y_true


def cross_entropy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean categorical cross-entropy, probabilities clipped by their dtype's eps."""
    y_true = _labels(y_true)
    probs = np.asarray(probs)
    eps = np.finfo(probs.dtype).eps if np.issubdtype(probs.dtype, np.floating) else 1e-12
    p = np.clip(probs[np.arange(y_true.shape[0]), y_true], eps, 1 - eps)
    return float(-np.mean(np.log(p)))


def top1_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of examples whose predicted label is the true one."""
    y_true = _labels(y_true)
    return float(np.mean(y_true == np.asarray(y_pred)))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``C[i, j]`` = number of examples of true class ``i`` predicted as ``j``; int64."""
    y_true = _labels(y_true)
    y_pred = np.asarray(y_pred)
    for name, labels in (("y_true", y_true), ("y_pred", y_pred)):
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(
                f"{name} has labels in [{labels.min()}, {labels.max()}], outside [0, {n_classes})"
            )
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def per_class(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class (0 where a ratio has nothing to count)."""
    cm = confusion_matrix(y_true, y_pred, n_classes).astype(np.float64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(tp), where=both > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual.astype(np.int64)}


def macro_precision_recall_f1(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int
) -> dict[str, float]:
    """Unweighted means over classes of precision, recall and F1."""
    pc = per_class(y_true, y_pred, n_classes)
    return {
        "macro_precision": float(pc["precision"].mean()),
        "macro_recall": float(pc["recall"].mean()),
        "macro_f1": float(pc["f1"].mean()),
    }


def micro_one_vs_rest(
    y_true: np.ndarray, probs: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """The reference's micro-averaged one-vs-rest accuracy, precision and recall."""
    y_true = _labels(y_true)
    probs = np.asarray(probs)
    n, k = probs.shape
    decided = probs > threshold
    actual = np.zeros((n, k), dtype=bool)
    actual[np.arange(n), y_true] = True
    tp = int(np.count_nonzero(decided & actual))
    fp = int(np.count_nonzero(decided & ~actual))
    fn = int(np.count_nonzero(~decided & actual))
    tn = n * k - tp - fp - fn
    return {
        "micro_accuracy": (tp + tn) / (n * k),
        "micro_precision": tp / (tp + fp) if tp + fp else 0.0,
        "micro_recall": tp / (tp + fn) if tp + fn else 0.0,
    }


def classification_report(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Every scalar metric of this module for one set of predicted probabilities."""
    probs = np.asarray(probs)
    y_pred = probs.argmax(axis=1)
    n_classes = probs.shape[1]
    return {
        "cross_entropy": cross_entropy(y_true, probs),
        "top1_accuracy": top1_accuracy(y_true, y_pred),
        **micro_one_vs_rest(y_true, probs),
        **macro_precision_recall_f1(y_true, y_pred, n_classes),
    }
