"""ALTA's RSNA Pneumonia zero-shot protocol (numpy + scikit-learn).

Shared by the `evaluate` module beside it and by alta-hf.

- AUROC of the scores over all images (`sklearn.metrics.roc_auc_score`).
- Accuracy and F1: `StratifiedKFold(n_splits=10, shuffle=True, random_state=0)`; on the nine
  training folds pick the threshold of the grid `0, step, ..., 1` that maximises F1 (the lowest such
  threshold), predict `score > threshold` on the held-out fold, and average the held-out accuracy
  and F1 over the folds.

The grid search evaluates F1 for all thresholds at once from the confusion counts,
`2 tp / (2 tp + fp + fn)`: the same number scikit-learn's `f1_score` computes (checked in the
tests), about a thousand times faster than calling it per threshold. Where no positive is
predicted, F1 counts as 0 (the official script gets NaN there and never selects such a threshold,
so the selected thresholds are the same).
"""

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold

__all__ = ["threshold_grid", "f1_at_thresholds", "select_threshold", "roc_auc", "threshold_protocol"]


def threshold_grid(step: float = 0.005) -> np.ndarray:
    """The thresholds `0, step, 2 step, ..., 1` exactly as the official script builds them."""
    if not 0 < step <= 1:
        raise ValueError(f"step must lie in (0, 1], got {step}")
    return np.arange(0, 1 + step, step)


def _binary_inputs(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels)
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels for {scores.size} scores")
    if scores.size == 0:
        raise ValueError("no scores given")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0/1, got values {sorted(set(labels.tolist()))[:10]}")
    labels = labels.astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("labels contain a single class; AUROC and F1 need positives and negatives")
    return scores, labels


def f1_at_thresholds(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """F1 of the predictions `scores > t` for every threshold `t` (0 where it is undefined)."""
    predicted = scores[None, :] > thresholds[:, None]
    true_positives = (predicted & labels[None, :]).sum(axis=1)
    false_positives = predicted.sum(axis=1) - true_positives
    false_negatives = labels.sum() - true_positives
    denominator = 2 * true_positives + false_positives + false_negatives
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denominator > 0, 2 * true_positives / denominator, 0.0)
    return f1


def select_threshold(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """The lowest threshold with the highest F1, and that F1."""
    f1 = f1_at_thresholds(scores, labels, thresholds)
    best = int(np.argmax(f1))  # first maximum: the official loop only moves on a strict improvement
    return float(thresholds[best]), float(f1[best])


def roc_auc(scores, labels) -> float:
    scores, labels = _binary_inputs(scores, labels)
    return float(roc_auc_score(labels, scores))


def threshold_protocol(scores, labels, n_splits: int = 10, seed: int = 0, step: float = 0.005) -> dict:
    """Cross-validated threshold selection; returns mean held-out accuracy/F1 and the per-fold values.

    Raises:
        ValueError: on invalid input, or when a class has fewer than `n_splits` members (a
        stratified split is then impossible).
    """
    scores, labels = _binary_inputs(scores, labels)
    counts = {"negative": int((~labels).sum()), "positive": int(labels.sum())}
    if min(counts.values()) < n_splits:
        raise ValueError(f"{n_splits}-fold stratification needs at least {n_splits} samples per class, got {counts}")
    thresholds = threshold_grid(step)
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    chosen, fold_accuracy, fold_f1 = [], [], []
    for train_index, test_index in folds.split(scores, labels):
        threshold, _ = select_threshold(scores[train_index], labels[train_index], thresholds)
        predicted = scores[test_index] > threshold
        chosen.append(threshold)
        fold_accuracy.append(float(accuracy_score(labels[test_index], predicted)))
        fold_f1.append(float(f1_score(labels[test_index], predicted, zero_division=0)))
    return {
        "accuracy": float(np.mean(fold_accuracy)),
        "f1": float(np.mean(fold_f1)),
        "accuracy_std": float(np.std(fold_accuracy)),
        "f1_std": float(np.std(fold_f1)),
        "fold_thresholds": chosen,
        "fold_accuracy": fold_accuracy,
        "fold_f1": fold_f1,
        "class_counts": counts,
    }
