"""Evaluation-set builders: CheXpert 5x200 and 8x200, RSNA Pneumonia, MIMIC 5x200, and the prompt table."""

import json
from collections import Counter

import datasets
import numpy as np
import pandas as pd
import pytest

from alta_hf.dataset_scripts import chexpert_5x200, chexpert_8x200, mimic_5x200, rsna
from alta_hf.dataset_scripts.class_prompts import chexpert_class_prompts
from alta_hf.dataset_scripts.common import DatasetBuildError, MissingColumnError
from tests.fixtures_eval_sets import FIVE, touch_files, write_chexpert_5x200, write_convirt, write_rsna
from devtools.mimic_fixtures import write_mimic_fixture, write_synthetic_mimic

EIGHT = ["Atelectasis", "Cardiomegaly", "Edema", "Fracture", "No Finding", "Pleural Effusion", "Pneumonia", "Pneumothorax"]


def test_chexpert_prompt_table_counts_and_order():
    prompts = chexpert_class_prompts()
    assert list(prompts) == FIVE
    assert {k: len(v) for k, v in prompts.items()} == {
        "Atelectasis": 210, "Cardiomegaly": 15, "Consolidation": 192, "Edema": 18, "Pleural Effusion": 54}
    assert len(set(prompts["Pleural Effusion"])) == 36  # "bilateral pleural effusion" is listed twice
    assert prompts["Pleural Effusion"][:3] == [
        "left bilateral pleural effusion", "left subpulmonic pleural effusion", "left bilateral pleural effusion"]
    assert "small left bilateral pleural effusion" in prompts["Pleural Effusion"]  # severity, location, subtype
    assert prompts["Atelectasis"][0] == "subsegmental atelectasis at the mid lung zone"
    assert prompts["Atelectasis"][-1] == "minimal residual atelectasis at the right lower lobe"
    assert prompts["Cardiomegaly"][0] == "cardiac silhouette size is upper limits of normal"
    assert prompts["Edema"][-1] == "decreased pulmonary interstitial edema"


def test_chexpert_5x200_rows_meta_and_cli(tmp_path, capsys):
    csv_path = tmp_path / "chexpert_5x200.csv"
    expected = write_chexpert_5x200(csv_path, per_class=3, bad_rows=True)
    root = tmp_path / "chexpert"
    root.mkdir()
    out = tmp_path / "out"
    chexpert_5x200.main(["--csv", str(csv_path), "--chexpert-root", str(root), "--output-dir", str(out)])
    assert "not_exactly_one_positive" in capsys.readouterr().out
    test = datasets.load_from_disk(str(out))["test"]
    assert test.features["label"].names == FIVE
    assert list(zip(test["image_path"], test["label"], test["report"])) == expected
    assert test["report"][0].startswith("\n1. atelectasis finding number 0, \"quoted\".\n")  # raw, newlines kept
    meta = json.loads((out / "alta_dataset.json").read_text())
    assert meta["kind"] == "chexpert_5x200" and meta["image_root"] == str(root.absolute())
    assert meta["class_names"] == FIVE and meta["class_prompts"] == chexpert_class_prompts()
    summary = json.loads((out / "build_summary.json").read_text())
    assert summary["skipped"] == {"malformed_rows": 0, "not_exactly_one_positive": 2, "path_outside_image_root": 0,
                                  "duplicate_images": 0}
    assert summary["per_class"] == dict.fromkeys(FIVE, 3)
    assert summary["checks"]["blocks_in_class_order"] is True


def test_chexpert_5x200_check_files_and_missing_column(tmp_path):
    csv_path = tmp_path / "chexpert_5x200.csv"
    expected = write_chexpert_5x200(csv_path, per_class=2)
    touch_files(tmp_path, [path for path, _, _ in expected[1:]])
    dataset, _, summary = chexpert_5x200.build_chexpert_5x200(csv_path, tmp_path, check_files=True)
    assert dataset["test"]["image_path"] == [path for path, _, _ in expected[1:]]
    assert summary["skipped"]["missing_image_file"] == 1
    assert summary["checks"]["blocks_in_class_order"] is False  # one Atelectasis row is gone
    frame = pd.read_csv(csv_path, index_col=0).drop(columns=["Edema"])
    frame.to_csv(csv_path)
    with pytest.raises(MissingColumnError, match="chexpert_5x200.csv: required column 'Edema'"):
        chexpert_5x200.build_chexpert_5x200(csv_path, tmp_path)


def test_chexpert_8x200_splits_and_labels(tmp_path):
    expected = write_convirt(tmp_path / "convirt", per_class=2, queries_per_class=2, texts_per_class=2)
    root = tmp_path / "chexpert"
    root.mkdir()
    dataset, meta, summary = chexpert_8x200.build_chexpert_8x200(tmp_path / "convirt", root)
    assert list(dataset) == ["candidates", "image_queries", "text_queries"]
    assert dataset["candidates"].features["label"].names == EIGHT
    for split, column in (("candidates", "image_path"), ("image_queries", "image_path"), ("text_queries", "text")):
        names = [EIGHT[k] for k in dataset[split]["label"]]
        assert list(zip(dataset[split][column], names)) == expected[split], split
    assert "A communuted finding of edema is present, likely." in dataset["text_queries"]["text"]  # verbatim
    assert summary["skipped"] == {
        "candidates_malformed_rows": 0, "candidates_not_single_positive_of_8": 3,
        "image_queries_unknown_class_or_empty": 1, "text_queries_unknown_class_or_empty": 0,
        "candidates_path_outside_image_root": 0, "candidates_duplicate_images": 0,
        "image_queries_path_outside_image_root": 0, "image_queries_duplicate_images": 0}
    assert summary["per_class"]["candidates"] == dict.fromkeys(EIGHT, 2)
    assert meta["kind"] == "chexpert_8x200" and meta["class_names"] == EIGHT and "class_prompts" not in meta


def test_rsna_labels_from_lists_and_kaggle_cross_check(tmp_path, capsys):
    root = tmp_path / "rsna"
    expected = write_rsna(root, n_val=6, n_test=4)
    out = tmp_path / "out"
    rsna.main(["--root", str(root), "--output-dir", str(out)])
    capsys.readouterr()
    loaded = datasets.load_from_disk(str(out))
    assert list(loaded) == ["validation", "test"]
    for split in ("validation", "test"):
        assert list(zip(loaded[split]["image_path"], loaded[split]["label"])) == expected[split]
    summary = json.loads((out / "build_summary.json").read_text())
    assert summary["skipped"] == {"validation_malformed_lines": 1, "validation_duplicate_images": 0,
                                  "validation_path_outside_image_root": 0, "test_malformed_lines": 1,
                                  "test_duplicate_images": 0, "test_path_outside_image_root": 0}
    assert summary["checks"] == {
        "validation_label_mismatch_with_kaggle_csv": 1, "validation_not_in_kaggle_csv": 0,
        "test_label_mismatch_with_kaggle_csv": 0, "test_not_in_kaggle_csv": 4,
        "kaggle_patients": 9, "kaggle_positive_patients": 6, "kaggle_malformed_rows": 0}
    meta = json.loads((out / "alta_dataset.json").read_text())
    assert meta["class_names"] == ["no pneumonia", "pneumonia"]
    assert meta["class_prompts"] == {"no pneumonia": ["There is no pneumonia"], "pneumonia": ["There is pneumonia"]}
    assert loaded["test"].features["label"].names == ["no pneumonia", "pneumonia"]


def test_rsna_kaggle_labels_collapse_boxes_and_missing_files(tmp_path):
    root = tmp_path / "rsna"
    expected = write_rsna(root)
    labels, bad = rsna.read_patient_labels(root / "stage_2_train_labels.csv")
    assert bad == 0 and labels.to_dict() == {pid: int(k % 3 > 0) for pid, k in
                                             ((fixtures_patient(k), k) for k in range(9))}
    touch_files(root, [path for path, _ in expected["validation"][:-1]] + [path for path, _ in expected["test"]])
    (root / "stage_2_train_labels.csv").unlink()  # the cross-check is optional
    dataset, _, summary = rsna.build_rsna(root, check_files=True)
    assert dataset["validation"]["image_path"] == [path for path, _ in expected["validation"][:-1]]
    assert summary["skipped"]["validation_missing_image_file"] == 1 and summary["checks"] == {}
    with pytest.raises(DatasetBuildError, match="val_list.txt: split list not found"):
        rsna.build_rsna(tmp_path)


def fixtures_patient(k):
    from tests.fixtures_eval_sets import patient_id

    return patient_id(k)


def test_mimic_5x200_exact_selection_on_the_hand_made_fixture(tmp_path):
    fixture = write_mimic_fixture(tmp_path)
    dataset, meta, summary = mimic_5x200.build_mimic_5x200(
        fixture.root, fixture.reports, splits=("train", "validate", "test"), per_class=1, seed=0)
    test = dataset["test"]
    assert test.features["label"].names == FIVE
    assert [(p.split("/")[3], FIVE[k], r) for p, k, r in zip(test["image_path"], test["label"], test["report"])] == [
        ("s53333333", "Atelectasis", "Left basilar atelectasis."),
        ("s53189527", "Cardiomegaly", "No acute cardiopulmonary process. Left effusion has resolved."),
        ("s55555555", "Consolidation", "Interval increase in right pleural effusion."),
        ("s56699142", "Edema", "1. ET tube in standard position. 2. No pneumothorax."),
        ("s50414267", "Pleural Effusion", "Large left pleural effusion"),
    ]
    assert test["image_path"][1] == "files/p10/p10000032/s53189527/2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab.jpg"
    assert summary["pool_per_class"] == dict.fromkeys(FIVE, 1)
    # 11 labelled studies: 7 single-positive without uncertainty, 6 of them with a frontal, 5 with an impression
    assert {k: summary["inputs"][k] for k in ("chexpert_rows", "single_positive_studies", "with_frontal_image", "with_impression")} == {
        "chexpert_rows": 11, "single_positive_studies": 7, "with_frontal_image": 6, "with_impression": 5}
    assert meta["kind"] == "mimic_5x200" and meta["class_prompts"] == chexpert_class_prompts()
    assert meta["selection"] == {"splits": ["train", "validate", "test"], "per_class": 1, "seed": 0}
    with pytest.raises(DatasetBuildError, match="only 0 eligible Atelectasis studies in split"):
        mimic_5x200.build_mimic_5x200(fixture.root, fixture.reports, per_class=1)


@pytest.fixture(scope="module")
def synthetic_mimic(tmp_path_factory):
    return write_synthetic_mimic(tmp_path_factory.mktemp("synthetic"), n_subjects=200, n_studies=900, n_images=1500,
                                 seed=3, compress=False, split_fractions=(0.2, 0.1, 0.7))


def test_mimic_5x200_sampling_rule_on_random_data(synthetic_mimic):
    root, reports = synthetic_mimic.root, synthetic_mimic.reports
    dataset, meta, summary = mimic_5x200.build_mimic_5x200(root, reports, per_class=4, seed=7)
    test = dataset["test"]
    labels = np.array(test["label"])
    assert (labels == np.repeat(np.arange(5), 4)).all()
    # recheck every selected study against the raw files, independently of the builder's code
    chexpert = pd.read_csv(root / "mimic-cxr-2.0.0-chexpert.csv")
    split = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv")
    metadata = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv", dtype={"ViewPosition": str}, keep_default_na=False)
    for path, label in zip(test["image_path"], labels):
        study = int(path.split("/")[3][1:])
        five = chexpert.set_index("study_id").loc[study, FIVE].to_numpy()
        assert five[label] == 1 and (five == 1).sum() == 1 and not (five == -1).any()
        assert set(split.loc[split.study_id == study, "split"]) == {"test"}
        images = metadata[metadata.study_id == study]
        dicom = path.rsplit("/", 1)[1][:-4]
        views = dict(zip(images.dicom_id, images.ViewPosition))
        frontal = sorted(d for d, v in views.items() if v == "PA") or sorted(d for d, v in views.items() if v == "AP")
        if frontal:  # with ViewPosition PA/AP present, the rule picks the first of them
            assert dicom == frontal[0]
    assert len(set(test["image_path"])) == 20
    again = mimic_5x200.build_mimic_5x200(root, reports, per_class=4, seed=7)[0]["test"]
    other = mimic_5x200.build_mimic_5x200(root, reports, per_class=4, seed=8)[0]["test"]
    assert again["image_path"] == test["image_path"] and again._fingerprint == test._fingerprint
    assert other["image_path"] != test["image_path"] and other._fingerprint != test._fingerprint
    assert Counter(other["label"]) == Counter(test["label"])


def test_fixture_layouts_match_the_real_files_shipped_in_torchxrayvision(tmp_path):
    """The real CheXpert train.csv and RSNA labels ship in the torchxrayvision wheel (not a dependency)."""
    xrv = pytest.importorskip("torchxrayvision")
    import zipfile
    from pathlib import Path

    from tests.fixtures_eval_sets import CHEXPERT_COLUMNS

    data = Path(xrv.__file__).parent / "data"
    assert list(pd.read_csv(data / "chexpert_train.csv.gz", nrows=0).columns) == CHEXPERT_COLUMNS
    with zipfile.ZipFile(data / "kaggle_stage_2_train_labels.csv.zip") as archive:
        archive.extractall(tmp_path)
    labels, bad = rsna.read_patient_labels(tmp_path / "stage_2_train_labels.csv")
    assert (len(labels), int(labels.sum()), bad) == (26_684, 6_012, 0)
