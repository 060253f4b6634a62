"""Label-based retrieval precision@k (numpy only; shared by the `evaluate` module beside it and by alta-hf).

A retrieved candidate is relevant when its class label equals the query's. This is the measure ALTA
reports for CheXpert 8x200, CheXpert 5x200 image-to-text and MIMIC 5x200 retrieval.

Ranking rule (deterministic, unlike `torch.topk` on tied scores): candidates are ordered by
descending similarity, and equal similarities keep the candidate order (lower candidate index
first). `k` larger than the number of candidates is an error: a clamped P@k would be a different
measure under the same name.
"""

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["rank_candidates", "precision_at_k"]


def rank_candidates(similarity: np.ndarray) -> np.ndarray:
    """Candidate indices of every query, best first.

    Args:
        similarity: `(num_queries, num_candidates)` scores, higher is more similar.

    Returns:
        `(num_queries, num_candidates)` int array; ties are broken by the lower candidate index.
    """
    # A stable ascending sort of the negated scores keeps tied candidates in index order.
    return np.argsort(-similarity, axis=1, kind="stable")


def _as_ks(k: int | Iterable[int]) -> list[int]:
    ks = [k] if isinstance(k, (int, np.integer)) else list(k)
    if not ks:
        raise ValueError("precision_at_k needs at least one k")
    for value in ks:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"k must be a positive integer, got {value!r}")
    return [int(value) for value in ks]


def precision_at_k(
    similarity,
    query_labels,
    candidate_labels,
    k: int | Iterable[int] = (5, 10),
    label_names: Sequence[str] | None = None,
) -> dict:
    """Precision@k of every query, averaged overall and per query class.

    Args:
        similarity: `(num_queries, num_candidates)` similarity scores (finite).
        query_labels: `(num_queries,)` integer class of every query.
        candidate_labels: `(num_candidates,)` integer class of every candidate.
        k: one cut-off or several; each must be at most `num_candidates`.
        label_names: optional names indexed by label, used as the keys of `per_class`.

    Returns:
        `{"precision_at_<k>": mean over queries, ..., "num_queries": int, "num_candidates": int,
        "per_class": {class: {"precision_at_<k>": mean over that class's queries, "num_queries": int}}}`.
        `per_class` lists the classes that have at least one query, in label order.
    """
    scores = np.asarray(similarity, dtype=np.float64)
    queries = np.asarray(query_labels)
    candidates = np.asarray(candidate_labels)
    if scores.ndim != 2:
        raise ValueError(f"similarity must be 2-D (queries x candidates), got shape {scores.shape}")
    num_queries, num_candidates = scores.shape
    if num_queries == 0 or num_candidates == 0:
        raise ValueError(f"similarity has no queries or no candidates (shape {scores.shape})")
    if queries.shape != (num_queries,):
        raise ValueError(f"query_labels has shape {queries.shape}, expected ({num_queries},)")
    if candidates.shape != (num_candidates,):
        raise ValueError(f"candidate_labels has shape {candidates.shape}, expected ({num_candidates},)")
    if not np.isfinite(scores).all():
        raise ValueError("similarity contains NaN or infinite values")
    ks = _as_ks(k)
    too_large = [value for value in ks if value > num_candidates]
    if too_large:
        raise ValueError(f"k={too_large} exceeds the number of candidates ({num_candidates})")

    ranked_labels = candidates[rank_candidates(scores)[:, : max(ks)]]
    hits = ranked_labels == queries[:, None]
    per_query = {value: hits[:, :value].mean(axis=1) for value in ks}

    result: dict = {f"precision_at_{value}": float(per_query[value].mean()) for value in ks}
    result["num_queries"] = int(num_queries)
    result["num_candidates"] = int(num_candidates)
    per_class = {}
    for label in np.unique(queries):
        mask = queries == label
        name = label_names[int(label)] if label_names is not None else int(label)
        entry = {f"precision_at_{value}": float(per_query[value][mask].mean()) for value in ks}
        entry["num_queries"] = int(mask.sum())
        per_class[name] = entry
    result["per_class"] = per_class
    return result
