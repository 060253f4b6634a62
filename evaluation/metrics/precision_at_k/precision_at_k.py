"""`evaluate` module: label-based retrieval precision@k.

Load it offline with `evaluate.load("<path to this folder>")`. The computation lives in the sibling
file `retrieval_precision.py` (copied along by `evaluate`), which alta-hf also imports directly.
"""

import datasets
import evaluate
import numpy as np

from .retrieval_precision import precision_at_k

__all__ = ["PrecisionAtK"]

_DESCRIPTION = """
Precision@k for retrieval where relevance means "same class label": for every query, the fraction
of its k most similar candidates whose label equals the query's label, averaged over the queries
(overall and per query class). Candidates are ranked by descending similarity; equal similarities
keep the lower candidate index first. k larger than the number of candidates raises ValueError.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): one row per query, the similarity to every candidate.
    references (`list` of `int`): the class label of every query.
    candidate_labels (`list` of `int`): the class label of every candidate (one per column).
    k (`int` or `list` of `int`, defaults to `[5, 10]`): the cut-offs.
    label_names (`list` of `str`, *optional*): names used as keys of `per_class`.
Returns:
    `precision_at_<k>` (`float`) for every k, `num_queries`, `num_candidates`, and `per_class`.
Examples:
    >>> metric = evaluate.load("evaluation/metrics/precision_at_k")
    >>> metric.compute(predictions=[[0.9, 0.1, 0.5]], references=[1], candidate_labels=[1, 0, 1], k=[1, 2])["precision_at_2"]
    1.0
"""

_CITATION = """
Lian et al., "Efficient medical vision-language alignment through adapting masked vision models",
IEEE Transactions on Medical Imaging, 2025 (arXiv:2506.08990).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PrecisionAtK(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, candidate_labels=None, k=(5, 10), label_names=None):
        if candidate_labels is None:
            raise ValueError("precision_at_k needs candidate_labels (the class of every candidate column)")
        return precision_at_k(np.asarray(predictions), references, candidate_labels, k=k, label_names=label_names)
