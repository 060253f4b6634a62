"""`evaluate` module: zero-shot classification from per-class similarity scores.

Load it offline with `evaluate.load("<path to this folder>")`. The computation lives in the sibling
file `classification_scores.py` (copied along by `evaluate`), which alta-hf also imports directly.
"""

import datasets
import evaluate
import numpy as np

from .classification_scores import zero_shot_classification

__all__ = ["ZeroShotClassification"]

_DESCRIPTION = """
Zero-shot classification as in CLIP-style evaluations: each sample gets one score per class (for
ALTA the cosine similarity between the image embedding and the class prompt embedding); the
prediction is the highest-scoring class (lower index on ties). Reports accuracy, macro-F1 over the
classes that occur, the confusion matrix over all classes, and per-class precision/recall/F1.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): one row per sample, one score per class.
    references (`list` of `int`): the true class index of every sample.
    label_names (`list` of `str`, *optional*): class names, keys of `per_class`.
Returns:
    `accuracy`, `macro_f1`, `confusion_matrix` (rows true, columns predicted), `predictions`, `per_class`.
Examples:
    >>> metric = evaluate.load("evaluation/metrics/zero_shot_classification")
    >>> metric.compute(predictions=[[0.9, 0.1], [0.2, 0.7]], references=[0, 0])["accuracy"]
    0.5
"""

_CITATION = """
Lian et al., "Efficient medical vision-language alignment through adapting masked vision models",
IEEE Transactions on Medical Imaging, 2025 (arXiv:2506.08990).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ZeroShotClassification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, label_names=None):
        return zero_shot_classification(np.asarray(predictions), references, label_names=label_names)
