"""training.finetune: the seeded class-stratified label fraction, the AUROC metric, and the CLI end to end (Trainer,
early stopping on validation AUROC, saved classifier + processor) on a tiny model and a stand-in labelled set."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from transformers import pipeline

from alta_hf.dataset_scripts.common import save_dataset
from alta_hf.dataset_scripts.labelled_sets import MULTI_LABEL, SINGLE_LABEL, classification_meta, labelled_dataset
from alta_hf.modeling_alta import AltaForImageClassification
from tests.factories import save_tiny_alta_folder
from alta_hf.training.finetune import main as finetune_main
from alta_hf.training.finetune_data import auroc_metrics, label_fraction_indices


def test_single_label_fraction_is_stratified_and_deterministic():
    labels = np.repeat([0, 1, 2], [700, 250, 50])
    np.random.default_rng(5).shuffle(labels)
    chosen = label_fraction_indices(labels, 0.1, seed=0)
    assert len(chosen) == 100 and np.all(np.diff(chosen) > 0)
    assert np.bincount(labels[chosen]).tolist() == [70, 25, 5]
    assert np.array_equal(chosen, label_fraction_indices(labels, 0.1, seed=0))
    assert not np.array_equal(chosen, label_fraction_indices(labels, 0.1, seed=1))
    # 1 %: every class keeps at least one row; 100 %: everything
    assert np.bincount(labels[label_fraction_indices(labels, 0.01, seed=0)]).tolist() == [7, 2, 1]
    assert np.array_equal(label_fraction_indices(labels, 1.0, seed=3), np.arange(1000))
    with pytest.raises(ValueError, match="label fraction"):
        label_fraction_indices(labels, 0.0, seed=0)


def test_multi_label_fraction_keeps_prevalence_and_combinations():
    rng = np.random.default_rng(0)
    labels = (rng.random((2000, 4)) < [0.5, 0.2, 0.05, 0.3]).astype(np.float32)
    chosen = label_fraction_indices(labels, 0.1, seed=0)
    assert len(chosen) == 200
    # every label combination keeps its share (largest remainder: within one row)
    combos = lambda rows: pd.Series(map(tuple, rows)).value_counts()
    full, part = combos(labels), combos(labels[chosen]).reindex(combos(labels).index, fill_value=0)
    assert np.all(np.abs(part.to_numpy() - full.to_numpy() * 0.1) < 1)
    assert np.array_equal(chosen, label_fraction_indices(labels, 0.1, seed=0))


def test_auroc_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    targets = (rng.random((50, 3)) < 0.4).astype(float)
    logits = targets * 1.5 + rng.normal(size=(50, 3))
    metrics = auroc_metrics(logits, targets, ["a", "b", "c"], MULTI_LABEL)
    expected = [roc_auc_score(targets[:, i], logits[:, i]) for i in range(3)]
    assert metrics["auroc_b"] == pytest.approx(expected[1]) and metrics["auroc"] == pytest.approx(np.mean(expected))
    binary = auroc_metrics(np.stack([-logits[:, 0], logits[:, 0]], 1), targets[:, 0], ["no", "yes"], SINGLE_LABEL)
    assert binary == {"auroc": pytest.approx(expected[0]), "auroc_yes": pytest.approx(expected[0])}
    # a class without positives in the split has no AUROC and is left out of the mean
    targets[:, 2] = 0
    assert "auroc_c" not in auroc_metrics(logits, targets, ["a", "b", "c"], MULTI_LABEL)


@pytest.fixture(scope="module")
def alta_folder(tmp_path_factory, golden_dir):
    return save_tiny_alta_folder(tmp_path_factory.mktemp("alta") / "alta-tiny", golden_dir / "BiomedVLP-CXR-BERT-specialized")


def _labelled_set(root, per_split):
    """Two classes told apart by brightness; one unreadable file in the training split."""
    rng = np.random.default_rng(0)
    frames = {}
    for split, count in per_split.items():
        rows = []
        for index in range(count):
            label = index % 2
            path = f"images/{split}_{index}.png"
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            pixels = np.clip(rng.normal(90 + 80 * label, 20, (64, 64)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / path)
            rows.append((path, label))
        frames[split] = pd.DataFrame(rows, columns=["image_path", "label"])
    (root / frames["train"]["image_path"][0]).write_bytes(b"not a png")
    names = ["dark", "bright"]
    dataset = labelled_dataset(frames, names, SINGLE_LABEL, "test")
    return save_dataset(dataset, root / "labelled", classification_meta("test", root, names, SINGLE_LABEL), {})


def test_finetune_cli_end_to_end(tmp_path, alta_folder):
    labelled = _labelled_set(tmp_path, {"train": 12, "validation": 8, "test": 8})
    out = tmp_path / "probe"
    code = finetune_main([
        "--model", str(alta_folder), "--dataset", str(labelled), "--output-dir", str(out), "--mode", "linear_probe",
        "--label_fraction", "0.5", "--num-train-epochs", "3", "--batch-size", "4", "--num-workers", "0",
        "--patience", "1", "--use-cpu",
    ])
    assert code == 0
    results = json.loads((out / "finetune_results.json").read_text())
    assert results["train_images"] == 6 and results["mode"] == "linear_probe"
    assert results["trainable_parameters"] == 64 * 2 + 2
    assert 0 <= results["validation"]["auroc"] <= 1 and 0 <= results["test"]["auroc"] <= 1
    assert results["best_checkpoint"] is not None
    # the folder is a classifier with its processor: the pipeline reproduces the model on a test image
    model = AltaForImageClassification.from_pretrained(out).eval()
    assert model.config.id2label == {0: "dark", 1: "bright"} and model.config.classification_mode == "linear_probe"
    classify = pipeline("image-classification", model=str(out), trust_remote_code=True)
    image = str(tmp_path / "images/test_1.png")
    scores = {r["label"]: r["score"] for r in classify(image)}
    from alta_hf.processing import load_processor, load_radiograph

    with torch.no_grad():
        expected = model(load_processor(out)(images=load_radiograph(image))["pixel_values"]).logits.softmax(-1)[0]
    assert scores["bright"] == pytest.approx(float(expected[1]), abs=1e-5)


def test_demo_labelled_set_labels_each_training_frontal_with_its_generated_class(tmp_path):
    from alta_hf.dataset_scripts.demo import DemoOptions, build_demo_data
    from alta_hf.dataset_scripts.demo_classification import build_demo_classification
    from alta_hf.dataset_scripts.demo_phantom import CLASS_NAMES

    demo = tmp_path / "demo"
    build_demo_data(demo, DemoOptions(num_train_studies=30, num_validate_studies=6, num_eval_per_class=3,
                                      image_size=64, seed=3), num_workers=1)
    dataset, meta, summary = build_demo_classification(demo)
    assert meta["problem_type"] == SINGLE_LABEL and meta["class_names"] == list(CLASS_NAMES)
    assert summary["rows"] == {"train": 30, "validation": 15, "test": 15}
    truth = {}
    for line in (demo / "studies.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["split"] == "train":
            truth[record["study_id"]] = record["finding"]["label"]
    for row in dataset["train"]:
        study = int(row["image_path"].split("_s")[1].split("_")[0])
        assert CLASS_NAMES[row["label"]] == truth[study]
        assert (demo / row["image_path"]).is_file()
