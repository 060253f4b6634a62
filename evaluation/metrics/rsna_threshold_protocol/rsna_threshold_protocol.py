"""`evaluate` module: ALTA's RSNA Pneumonia zero-shot protocol (AUROC + cross-validated threshold).

Load it offline with `evaluate.load("<path to this folder>")`. The computation lives in the sibling
file `threshold_protocol.py` (copied along by `evaluate`), which alta-hf also imports directly.
"""

import datasets
import evaluate

from .threshold_protocol import roc_auc, threshold_protocol

__all__ = ["RsnaThresholdProtocol"]

_DESCRIPTION = """
Binary zero-shot evaluation as ALTA reports it on RSNA Pneumonia. The score of an image is
softmax([cos_pos, cos_neg])[0]. AUROC is computed over all images. Accuracy and F1 come from
10-fold StratifiedKFold(shuffle=True, random_state=0): on the nine training folds the threshold of
the grid 0..1 (step 0.005) with the highest F1 (the lowest such threshold) is chosen, `score >
threshold` is applied to the held-out fold, and the held-out accuracy and F1 are averaged.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): the score of every image (probability of the positive class).
    references (`list` of `int`): 0/1 labels, both classes present.
    n_splits (`int`, defaults to 10), seed (`int`, defaults to 0), step (`float`, defaults to 0.005).
Returns:
    `roc_auc`, `accuracy`, `f1` (fold means), `accuracy_std`, `f1_std`, `fold_thresholds`,
    `fold_accuracy`, `fold_f1`, `class_counts`.
Examples:
    >>> metric = evaluate.load("evaluation/metrics/rsna_threshold_protocol")
    >>> metric.compute(predictions=[0.1, 0.1, 0.9, 0.9], references=[0, 0, 1, 1], n_splits=2)["f1"]
    1.0
"""

_CITATION = """
Lian et al., "Efficient medical vision-language alignment through adapting masked vision models",
IEEE Transactions on Medical Imaging, 2025 (arXiv:2506.08990).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RsnaThresholdProtocol(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, n_splits=10, seed=0, step=0.005):
        result = {"roc_auc": roc_auc(predictions, references)}
        result.update(threshold_protocol(predictions, references, n_splits=n_splits, seed=seed, step=step))
        return result
