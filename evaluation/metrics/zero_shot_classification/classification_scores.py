"""Zero-shot classification scores from per-class similarities (numpy + scikit-learn).

Shared by the `evaluate` module beside it and by alta-hf. The prediction is the class with the
highest score; on a tie the lower class index wins (`numpy.argmax`).
"""

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

__all__ = ["zero_shot_classification"]


def zero_shot_classification(scores, labels, label_names: Sequence[str] | None = None) -> dict:
    """Accuracy, macro-F1, confusion matrix and per-class scores of argmax predictions.

    Args:
        scores: `(num_samples, num_classes)` similarity of every sample to every class (finite).
        labels: `(num_samples,)` true class indices in `[0, num_classes)`.
        label_names: optional class names (length `num_classes`), keys of `per_class`.

    Returns:
        `{"accuracy", "macro_f1", "confusion_matrix" (rows = true class, columns = predicted, all
        classes), "predictions", "per_class": {class: {"precision", "recall", "f1", "support"}}}`.
        Macro-F1 averages over the classes that occur as a label or a prediction (scikit-learn's
        default label set), so a class absent from a small sample does not count as F1 = 0.
        Undefined precision/recall/F1 (division by zero) count as 0.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty (samples x classes) array, got shape {scores.shape}")
    num_samples, num_classes = scores.shape
    if labels.shape != (num_samples,):
        raise ValueError(f"labels has shape {labels.shape}, expected ({num_samples},)")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    if label_names is not None and len(label_names) != num_classes:
        raise ValueError(f"{len(label_names)} label_names for {num_classes} score columns")

    predictions = scores.argmax(axis=1)
    all_classes = list(range(num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=all_classes, zero_division=0
    )
    names = list(label_names) if label_names is not None else all_classes
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
        "confusion_matrix": confusion_matrix(labels, predictions, labels=all_classes).tolist(),
        "predictions": predictions.tolist(),
        "per_class": {
            names[index]: {
                "precision": float(precision[index]),
                "recall": float(recall[index]),
                "f1": float(f1[index]),
                "support": int(support[index]),
            }
            for index in all_classes
        },
    }
