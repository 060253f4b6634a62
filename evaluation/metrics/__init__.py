"""ALTA's evaluation metrics as local `evaluate` modules, and the functions they compute with.

Each metric is a folder `<name>/` holding `<name>.py` (the `evaluate.Metric`) and one numpy /
scikit-learn file with the computation, which alta-hf imports directly: one implementation, usable
offline both ways.

    >>> import evaluate
    >>> from evaluation.metrics import metric_path
    >>> evaluate.load(metric_path("precision_at_k"))   # or evaluate.load("evaluation/metrics/precision_at_k")
"""

from pathlib import Path

from .precision_at_k.retrieval_precision import precision_at_k, rank_candidates
from .rsna_threshold_protocol.threshold_protocol import (
    f1_at_thresholds,
    roc_auc,
    select_threshold,
    threshold_grid,
    threshold_protocol,
)
from .zero_shot_classification.classification_scores import zero_shot_classification

__all__ = [
    "METRIC_NAMES",
    "metric_path",
    "load_metric",
    "precision_at_k",
    "rank_candidates",
    "zero_shot_classification",
    "roc_auc",
    "threshold_protocol",
    "threshold_grid",
    "f1_at_thresholds",
    "select_threshold",
]

METRIC_NAMES = ("precision_at_k", "zero_shot_classification", "rsna_threshold_protocol")


def metric_path(name: str) -> str:
    """Folder of the local `evaluate` module `name` (inside the installed package)."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(METRIC_NAMES)}")
    return str(Path(__file__).resolve().parent / name)


def load_metric(name: str, **kwargs):
    """`evaluate.load` of one of the bundled modules; works offline."""
    import evaluate  # deferred: importing evaluate costs several seconds and the library does not need it

    return evaluate.load(metric_path(name), **kwargs)
