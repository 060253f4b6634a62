"""Every evaluation protocol end to end on small fixtures in the real dataset layouts.

The stand-in model (tests/eval_stand_ins.py) makes every figure computable by hand: an image is its
concept, a text the sum of its concept words. Neighbouring concepts get similarity exp(-2) and tie
exactly, so the deterministic tie rule (lower candidate index first) decides the rankings.
"""

import json

import pytest
from PIL import Image

from alta_hf.evaluation import EvaluationDataError, run_task
from tests import eval_stand_ins as stand_ins


def _run(task, data_dir, out=None, model=None, **kwargs):
    model = model or stand_ins.ConceptModel()
    return run_task(task, model, stand_ins.ConceptProcessor(), data_dir, output_dir=out, progress=False, **kwargs), model


def _check_outputs(out, result):
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"] == pytest.approx(result["metrics"])
    assert result["plots"] and all((out / name).is_file() for name in result["plots"])
    for name in result["plots"]:
        with Image.open(out / name) as image:
            image.verify()
            assert image.format == "PNG"


def test_chexpert_8x200(tmp_path, processing_stand_ins):
    data = stand_ins.make_chexpert_8x200(tmp_path)  # 7 candidates and 2 image queries per class
    result, model = _run("chexpert_8x200", data, tmp_path / "out")
    # Every query's 7 same-class candidates come first: P@5 = 1, P@10 = 7/10, P@50 = 7/50.
    for direction in ("image_to_image", "text_to_image"):
        assert result["metrics"][f"{direction}/precision_at_5"] == 1.0
        assert result["metrics"][f"{direction}/precision_at_10"] == pytest.approx(0.7)
        assert result["metrics"][f"{direction}/precision_at_50"] == pytest.approx(0.14)
        assert result["details"][direction]["per_class"]["No Finding"]["precision_at_10"] == pytest.approx(0.7)
    assert result["details"]["image_to_image"]["num_queries"] == 16
    assert result["details"]["text_to_image"]["num_candidates"] == 56
    assert result["images"] == {"evaluated": 72, "skipped": 0, "skipped_files": []}
    assert result["protocol"]["text_queries"] == {"max_length": 20, "truncation": False, "clean": False}
    _check_outputs(tmp_path / "out", result)


def test_chexpert_5x200_retrieval_and_zero_shot(tmp_path, processing_stand_ins):
    data = stand_ins.make_chexpert_5x200(tmp_path)  # 4 per class; one Atelectasis image drawn as Cardiomegaly
    result, _ = _run("chexpert_5x200", data, tmp_path / "out")
    metrics = result["metrics"]
    # Correct images: their 4 impressions, then the first impression of the lower neighbour class
    # (tie with the upper neighbour, lower index wins): P@5 = 4/5. The misdrawn image: 1/5.
    assert metrics["image_to_text/precision_at_5"] == pytest.approx((19 * 0.8 + 0.2) / 20)
    assert metrics["image_to_text/precision_at_10"] == pytest.approx(0.4)
    assert result["details"]["image_to_text"]["skipped_k"] == [100]  # only 20 candidates
    assert result["details"]["image_to_text"]["per_class"]["Atelectasis"]["precision_at_5"] == pytest.approx((3 * 0.8 + 0.2) / 4)
    assert metrics["zero_shot/accuracy"] == 0.95
    assert metrics["zero_shot/macro_f1"] == pytest.approx((6 / 7 + 8 / 9 + 3) / 5)
    assert result["details"]["zero_shot"]["confusion_matrix"][0] == [3, 1, 0, 0, 0]
    assert result["protocol"]["class_prompts"]["counts"] == {name: 3 for name in stand_ins.CHEXPERT_5X200}
    assert sorted(result["plots"]) == ["image_to_text_precision_at_k.png", "zero_shot_confusion_matrix.png"]
    _check_outputs(tmp_path / "out", result)


def test_rsna_scores_auroc_and_skips_a_corrupt_dicom(tmp_path, processing_stand_ins):
    data = stand_ins.make_rsna(tmp_path)  # 10 negatives, 10 positives (one drawn negative), 1 corrupt file
    result, _ = _run("rsna", data, tmp_path / "out")
    # 9 positives score above all 10 negatives; the misdrawn positive ties with them: (90 + 5) / 100.
    assert result["metrics"]["roc_auc"] == pytest.approx(0.95)
    assert 0.5 <= result["metrics"]["accuracy"] <= 1 and 0 <= result["metrics"]["f1"] <= 1
    assert len(result["details"]["threshold_protocol"]["fold_thresholds"]) == 10
    assert result["images"]["evaluated"] == 20 and result["images"]["skipped"] == 1
    assert result["images"]["skipped_files"][0]["source"].endswith("corrupt.dcm")
    assert result["split"] == "test"
    _check_outputs(tmp_path / "out", result)


def test_rsna_small_split_skips_only_the_threshold_protocol(tmp_path, processing_stand_ins):
    data = stand_ins.make_rsna(tmp_path, per_class=4, corrupt=False)
    result, _ = _run("rsna", data, split="validation")
    assert set(result["metrics"]) == {"roc_auc"}
    assert "at least 10 samples per class" in result["details"]["threshold_protocol_skipped"]
    assert result["split"] == "validation" and result["plots"] == []  # no output folder, no files


def test_mimic_5x200(tmp_path, processing_stand_ins):
    result, _ = _run("mimic_5x200", stand_ins.make_mimic_5x200(tmp_path), tmp_path / "out")  # 3 per class
    for direction in ("text_to_image", "image_to_text"):
        assert result["metrics"][f"{direction}/precision_at_1"] == 1.0
        assert result["metrics"][f"{direction}/precision_at_5"] == pytest.approx(3 / 5)
        assert result["metrics"][f"{direction}/precision_at_10"] == pytest.approx(3 / 10)
    _check_outputs(tmp_path / "out", result)


def test_demo_validation_and_test(tmp_path, processing_stand_ins):
    data = stand_ins.make_demo(tmp_path)
    for split in ("validation", "test"):
        result, _ = _run("demo", data, tmp_path / split, split=split)
        assert result["metrics"]["zero_shot/accuracy"] == 1.0
        assert result["metrics"]["image_to_text/precision_at_5"] == pytest.approx(4 / 5)
        assert result["metrics"]["text_to_image/precision_at_10"] == pytest.approx(4 / 10)
        assert result["split"] == split
        _check_outputs(tmp_path / split, result)


def test_cached_rerun_does_not_call_the_model(tmp_path, processing_stand_ins):
    data = stand_ins.make_chexpert_5x200(tmp_path)
    first, model = _run("chexpert_5x200", data, cache_dir=tmp_path / "cache")
    calls = (model.image_calls, model.text_calls)
    assert calls[0] > 0 and first["embedding"]["cache_misses"] == 3
    second, model = _run("chexpert_5x200", data, model=model, cache_dir=tmp_path / "cache")
    assert (model.image_calls, model.text_calls) == calls
    assert second["embedding"] == {"images_embedded": 0, "texts_embedded": 0, "cache_hits": 3, "cache_misses": 0}
    assert second["metrics"] == first["metrics"]
    # Different weights are a different model: nothing is reused.
    changed = stand_ins.ConceptModel()
    with __import__("torch").no_grad():
        changed.word_embeddings.weight[stand_ins.VOCAB["edema"]] *= 2
    third, changed = _run("chexpert_5x200", data, model=changed, cache_dir=tmp_path / "cache")
    assert third["embedding"]["cache_hits"] == 0 and changed.image_calls > 0


def test_run_task_restores_training_mode(tmp_path, processing_stand_ins):
    model = stand_ins.ConceptModel().train()
    _run("mimic_5x200", stand_ins.make_mimic_5x200(tmp_path), model=model)
    assert model.training


def test_bad_dataset_folders(tmp_path, processing_stand_ins):
    data = stand_ins.make_mimic_5x200(tmp_path)
    with pytest.raises(EvaluationDataError, match="holds kind 'mimic_5x200', not 'demo'"):
        _run("demo", data)
    with pytest.raises(EvaluationDataError, match="no split 'validation'"):
        _run("mimic_5x200", data, split="validation")
    with pytest.raises(EvaluationDataError, match="no alta_dataset.json"):
        _run("rsna", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown task"):
        _run("chexpert_14x200", data)
    metadata = json.loads((data / "alta_dataset.json").read_text())
    (data / "alta_dataset.json").write_text(json.dumps({**metadata, "class_names": ["a", "b", "c", "d", "e"]}))
    with pytest.raises(EvaluationDataError, match="ClassLabel names"):
        _run("mimic_5x200", data)


def test_unreadable_split_is_a_clear_error(tmp_path, processing_stand_ins):
    data = stand_ins.make_mimic_5x200(tmp_path)
    with pytest.raises(EvaluationDataError, match="none of the 15 images"):
        _run("mimic_5x200", data, image_root=tmp_path / "elsewhere")
