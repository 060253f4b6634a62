"""The evaluation metrics against hand-computed values (ties, one class, one query) and ALTA's RSNA protocol."""

import numpy as np
import pytest
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

from alta_hf.evaluation.metrics import (
    f1_at_thresholds,
    metric_path,
    precision_at_k,
    rank_candidates,
    roc_auc,
    threshold_grid,
    threshold_protocol,
    zero_shot_classification,
)


# ---------------------------------------------------------------- precision@k


def test_precision_at_k_ties_keep_candidate_order():
    # candidates 1, 2, 3 tie; the stable rule ranks them 1, 2, 3 (a label-1 candidate first).
    similarity = [[0.9, 0.5, 0.5, 0.5, 0.1]]
    assert rank_candidates(np.array(similarity)).tolist() == [[0, 1, 2, 3, 4]]
    result = precision_at_k(similarity, [0], [0, 1, 0, 0, 1], k=[1, 2, 3, 4, 5])
    assert result["precision_at_1"] == 1.0
    assert result["precision_at_2"] == 0.5  # would be 1.0 if the tie were broken towards index 2
    assert result["precision_at_3"] == pytest.approx(2 / 3)
    assert result["precision_at_4"] == 0.75
    assert result["precision_at_5"] == 0.6


def test_precision_at_k_two_queries_overall_and_per_class():
    similarity = [[0.9, 0.8, 0.1, 0.2],   # query label 0: ranking 0, 1, 3, 2 -> labels 0, 1, 0, 1
                  [0.1, 0.7, 0.9, 0.3]]   # query label 1: ranking 2, 1, 3, 0 -> labels 1, 1, 0, 0
    result = precision_at_k(similarity, [0, 1], [0, 1, 1, 0], k=[1, 2, 3], label_names=["normal", "effusion"])
    assert result["precision_at_1"] == 1.0
    assert result["precision_at_2"] == pytest.approx((0.5 + 1.0) / 2)
    assert result["precision_at_3"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert result["per_class"] == {
        "normal": {"precision_at_1": 1.0, "precision_at_2": 0.5, "precision_at_3": pytest.approx(2 / 3), "num_queries": 1},
        "effusion": {"precision_at_1": 1.0, "precision_at_2": 1.0, "precision_at_3": pytest.approx(2 / 3), "num_queries": 1},
    }
    assert (result["num_queries"], result["num_candidates"]) == (2, 4)


def test_precision_at_k_all_same_class():
    rng = np.random.default_rng(0)
    similarity = rng.normal(size=(3, 6))
    same = precision_at_k(similarity, [2, 2, 2], [2] * 6, k=[1, 6])
    assert same["precision_at_1"] == same["precision_at_6"] == 1.0
    assert list(same["per_class"]) == [2]
    other = precision_at_k(similarity, [0, 0, 0], [2] * 6, k=[1, 6])
    assert other["precision_at_1"] == other["precision_at_6"] == 0.0


def test_precision_at_k_one_query_equals_its_class():
    result = precision_at_k([[0.3, 0.2, 0.9]], [1], [1, 0, 0], k=2)
    assert result["precision_at_2"] == 0.5  # ranking 2 (label 0), 0 (label 1)
    assert result["per_class"] == {1: {"precision_at_2": 0.5, "num_queries": 1}}


@pytest.mark.parametrize(
    "similarity, queries, candidates, k, message",
    [
        ([[0.1, 0.2]], [0], [0, 1], 3, "exceeds the number of candidates"),
        ([[0.1, 0.2]], [0], [0, 1], 0, "positive integer"),
        ([[0.1, np.nan]], [0], [0, 1], 1, "NaN"),
        ([[0.1, 0.2]], [0, 1], [0, 1], 1, "query_labels"),
        ([[0.1, 0.2]], [0], [0], 1, "candidate_labels"),
        ([0.1, 0.2], [0], [0, 1], 1, "2-D"),
    ],
)
def test_precision_at_k_rejects_bad_input(similarity, queries, candidates, k, message):
    with pytest.raises(ValueError, match=message):
        precision_at_k(similarity, queries, candidates, k=k)


# ---------------------------------------------------------------- zero-shot classification


def test_zero_shot_classification_hand_values():
    scores = [[0.9, 0.1, 0.0], [0.2, 0.5, 0.1], [0.0, 0.7, 0.3], [0.1, 0.4, 0.3]]
    result = zero_shot_classification(scores, [0, 0, 1, 2], label_names=["a", "b", "c"])
    assert result["predictions"] == [0, 1, 1, 1]
    assert result["accuracy"] == 0.5
    # F1: a = 2*1/(2+0+1) = 2/3, b = 2*1/(2+2+0) = 1/2, c = 0
    assert result["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    assert result["per_class"]["b"] == {"precision": pytest.approx(1 / 3), "recall": 1.0, "f1": 0.5, "support": 1}


def test_zero_shot_classification_ties_pick_the_lower_class():
    result = zero_shot_classification([[0.4, 0.4, 0.1], [0.2, 0.3, 0.3]], [0, 1])
    assert result["predictions"] == [0, 1]
    assert result["accuracy"] == 1.0


def test_zero_shot_classification_absent_and_single_class():
    # Class 3 never occurs: it stays in the confusion matrix but not in the macro average.
    result = zero_shot_classification([[1, 0, 0, 0], [0, 1, 0, 0]], [0, 1])
    assert result["macro_f1"] == 1.0
    assert np.array(result["confusion_matrix"]).shape == (4, 4)
    single = zero_shot_classification([[0.9, 0.1], [0.8, 0.3], [0.6, 0.5]], [0, 0, 0])
    assert (single["accuracy"], single["macro_f1"]) == (1.0, 1.0)
    assert single["confusion_matrix"] == [[3, 0], [0, 0]]


def test_zero_shot_classification_rejects_bad_labels():
    with pytest.raises(ValueError, match="labels must lie in"):
        zero_shot_classification([[0.1, 0.9]], [2])
    with pytest.raises(ValueError, match="label_names"):
        zero_shot_classification([[0.1, 0.9]], [1], label_names=["only one"])


# ---------------------------------------------------------------- RSNA protocol


def test_threshold_grid_is_the_official_one():
    grid = threshold_grid(0.005)
    assert len(grid) == 201 and grid[0] == 0.0 and grid[-1] == pytest.approx(1.0) and grid[100] == 0.5


def test_roc_auc_counts_ties_as_half():
    # positive/negative pairs: (0.5, 0.5) tie, (0.5, 0.1), (0.9, 0.5), (0.9, 0.1) -> 3.5 / 4
    assert roc_auc([0.5, 0.5, 0.9, 0.1], [1, 0, 1, 0]) == 0.875


def test_grid_f1_equals_scikit_learn():
    rng = np.random.default_rng(1)
    labels = rng.random(300) < 0.3
    scores = np.clip(labels * 0.2 + rng.random(300) * 0.8, 0, 1)
    thresholds = threshold_grid(0.05)
    expected = [f1_score(labels, scores > t, zero_division=0) for t in thresholds]
    assert f1_at_thresholds(scores, labels, thresholds).tolist() == expected


def test_threshold_protocol_chooses_the_f1_threshold_not_the_accuracy_one():
    # 10 positives at 0.5; negatives: 8 at 0.1013, 12 at 0.5. Predicting everything >= 0.5 positive
    # gives F1 > 0 but lower accuracy than predicting nothing; the protocol maximises F1, so every fold
    # picks the lowest grid threshold above 0.1013, i.e. 0.105.
    scores = np.array([0.5] * 10 + [0.1013] * 8 + [0.5] * 12)
    labels = np.array([1] * 10 + [0] * 20)
    result = threshold_protocol(scores, labels)
    assert result["fold_thresholds"] == pytest.approx([0.105] * 10)
    # Each held-out fold has 1 positive (found) and 2 negatives (right only when at 0.1013).
    assert result["accuracy"] == pytest.approx((10 + 8) / 30)
    expected_f1 = []
    for _, test_index in StratifiedKFold(10, shuffle=True, random_state=0).split(scores, labels):
        false_positives = int(((labels[test_index] == 0) & (scores[test_index] == 0.5)).sum())
        expected_f1.append(2 / (2 + false_positives))
    assert result["f1"] == pytest.approx(np.mean(expected_f1))
    assert result["class_counts"] == {"negative": 20, "positive": 10}


def test_threshold_protocol_separable_case():
    scores = np.array([0.2013] * 10 + [0.8] * 10)
    result = threshold_protocol(scores, np.array([0] * 10 + [1] * 10))
    assert result["fold_thresholds"] == pytest.approx([0.205] * 10)
    assert (result["accuracy"], result["f1"], result["f1_std"]) == (1.0, 1.0, 0.0)


def _official_loop(scores, labels):
    """The official script's fold loop, rewritten plainly (NaN F1 never wins)."""
    accuracies, f1s = [], []
    for train, test in StratifiedKFold(10, shuffle=True, random_state=0).split(scores, labels):
        best_threshold, best = 0, -1
        for threshold in np.arange(0, 1 + 0.005, 0.005):
            predicted = scores[train] > threshold
            tp = np.sum(labels[train] & predicted)
            precision = tp / predicted.sum() if predicted.sum() else np.nan
            recall = tp / labels[train].sum()
            f1 = 2 * precision * recall / (precision + recall) if tp else np.nan
            if f1 > best:
                best_threshold, best = threshold, f1
        predicted = scores[test] > best_threshold
        tp = np.sum(labels[test] & predicted)
        accuracies.append(np.mean(labels[test] == predicted))
        f1s.append(2 * tp / (2 * tp + np.sum(predicted & ~labels[test]) + np.sum(~predicted & labels[test])))
    return np.mean(accuracies), np.mean(f1s)


def test_threshold_protocol_matches_the_official_loop():
    rng = np.random.default_rng(3)
    labels = rng.random(240) < 0.35
    scores = np.clip(0.45 + 0.1 * labels + rng.normal(0, 0.06, 240), 0, 1).astype(np.float32).astype(np.float64)
    accuracy, f1 = _official_loop(scores, labels)
    result = threshold_protocol(scores, labels.astype(int))
    assert result["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert result["f1"] == pytest.approx(f1, abs=1e-12)


@pytest.mark.parametrize(
    "scores, labels, message",
    [
        ([0.1] * 12, [0] * 12, "single class"),
        ([0.1] * 12, [0] * 6 + [2] * 6, "0/1"),
        ([0.1] * 12, [0] * 6 + [1] * 5, "labels for"),
        ([0.1] * 15, [0] * 10 + [1] * 5, "at least 10 samples per class"),
        ([np.inf] * 12, [0] * 6 + [1] * 6, "NaN or infinite"),
    ],
)
def test_threshold_protocol_rejects_bad_input(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        threshold_protocol(scores, labels)


# ---------------------------------------------------------------- the evaluate modules


def test_evaluate_modules_load_offline_and_agree(monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    similarity = [[0.9, 0.5, 0.5, 0.5, 0.1], [0.2, 0.3, 0.9, 0.1, 0.6]]
    pak = evaluate.load(metric_path("precision_at_k"))
    pak.add_batch(predictions=similarity[:1], references=[0])
    pak.add_batch(predictions=similarity[1:], references=[1])
    assert pak.compute(candidate_labels=[0, 1, 0, 0, 1], k=[2, 5]) == precision_at_k(similarity, [0, 1], [0, 1, 0, 0, 1], k=[2, 5])

    scores = [[0.9, 0.1, 0.0], [0.2, 0.5, 0.1], [0.0, 0.7, 0.3]]
    zsc = evaluate.load(metric_path("zero_shot_classification"))
    assert zsc.compute(predictions=scores, references=[0, 0, 1], label_names=["a", "b", "c"]) == zero_shot_classification(
        scores, [0, 0, 1], label_names=["a", "b", "c"]
    )

    rsna = evaluate.load(metric_path("rsna_threshold_protocol"))
    scores = [0.5] * 10 + [0.1013] * 8 + [0.5] * 12
    labels = [1] * 10 + [0] * 20
    result = rsna.compute(predictions=scores, references=labels)
    assert result["roc_auc"] == roc_auc(scores, labels) == pytest.approx(1 - 12 / 20 / 2)
    assert result["fold_thresholds"] == threshold_protocol(scores, labels)["fold_thresholds"]


def test_unknown_metric_name():
    with pytest.raises(ValueError, match="available"):
        metric_path("accuracy")
