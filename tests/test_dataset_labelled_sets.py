"""The labelled-set builders (CheXpert, NIH ChestX-ray14, RSNA with a training split) on the REAL tables that ship in
the torchxrayvision wheel (fetched from the package registry at test time, never committed), with stand-in images
and, where the wheel has none, stand-in split lists made from the real image names."""

import gzip

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from alta_hf.dataset_scripts.chexpert_classification import build_chexpert_classification
from alta_hf.dataset_scripts.chexpert_classification import main as chexpert_main
from alta_hf.dataset_scripts.common import load_dataset_meta
from alta_hf.dataset_scripts.nih_chestxray14 import CLASS_NAMES as NIH_CLASSES
from alta_hf.dataset_scripts.nih_chestxray14 import build_nih_chestxray14
from alta_hf.dataset_scripts.rsna_classification import build_rsna_classification


def _real_table(name):
    from alta_hf.dataset_scripts.torchxrayvision_data import TorchXRayVisionUnavailable, fetch_torchxrayvision_file

    try:
        return fetch_torchxrayvision_file(name)
    except TorchXRayVisionUnavailable as error:
        pytest.skip(f"the real {name} is fetched from the package registry at test time: {error}")


@pytest.fixture(scope="module")
def chexpert_train():
    return _real_table("chexpert_train.csv.gz")


@pytest.fixture(scope="module")
def nih_data_entry():
    return _real_table("Data_Entry_2017_v2020.csv.gz")


@pytest.fixture(scope="module")
def rsna_labels():
    return _real_table("kaggle_stage_2_train_labels.csv.zip")


def _stand_in_image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (32, 32), 128).save(path)


def _rows(split):
    return {row["image_path"]: row for row in split}


# ----- CheXpert ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chexpert_root(tmp_path_factory, chexpert_train):
    """The real train.csv; valid.csv stands in as 30 real train rows moved to valid/ (the wheel has no valid.csv)."""
    root = tmp_path_factory.mktemp("chexpert")
    folder = root / "CheXpert-v1.0-small"
    folder.mkdir()
    (folder / "train.csv").write_bytes(gzip.decompress(chexpert_train.read_bytes()))
    valid = pd.read_csv(chexpert_train, nrows=30)
    valid["Path"] = valid["Path"].str.replace("/train/", "/valid/")
    valid.to_csv(folder / "valid.csv", index=False)
    return root


def test_chexpert_real_table_u_ones_and_u_zeros(chexpert_root):
    dataset, meta, summary = build_chexpert_classification(chexpert_root)
    assert meta["kind"] == "classification" and meta["problem_type"] == "multi_label_classification"
    assert meta["class_names"] == ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    # 223,414 real rows, 191,027 frontal; every frontal row is in train or validation, no patient in both
    assert summary["skipped"]["train_lateral_views"] == 32387 and summary["skipped"]["train_malformed_rows"] == 0
    assert len(dataset["train"]) + len(dataset["validation"]) == 191027
    patients = {s: {p.split("/")[2] for p in dataset[s]["image_path"]} for s in ("train", "validation")}
    assert not patients["train"] & patients["validation"]
    assert 0.04 < len(patients["validation"]) / (len(patients["train"]) + len(patients["validation"])) < 0.06
    rows = {**_rows(dataset["train"]), **_rows(dataset["validation"])}
    # patient00002/study2: Atelectasis, Cardiomegaly, Consolidation, Edema and Effusion all uncertain (-1)
    uncertain = "CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg"
    assert rows[uncertain]["labels"] == [1.0] * 5
    assert rows["CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"]["labels"] == [0.0] * 5  # blanks
    zeros, _, _ = build_chexpert_classification(chexpert_root, uncertain="zeros")
    assert {**_rows(zeros["train"]), **_rows(zeros["validation"])}[uncertain]["labels"] == [0.0] * 5
    assert len(dataset["test"]) == sum(1 for p in dataset["test"]["image_path"]) and "/valid/" in dataset["test"][0]["image_path"]
    # seeded: the same split for the same seed, another one for another seed
    again, _, _ = build_chexpert_classification(chexpert_root)
    other, _, _ = build_chexpert_classification(chexpert_root, seed=1)
    assert again["validation"]["image_path"] == dataset["validation"]["image_path"]
    assert other["validation"]["image_path"] != dataset["validation"]["image_path"]


def test_chexpert_check_files_with_stand_in_images(tmp_path, chexpert_train):
    folder = tmp_path / "CheXpert-v1.0-small"
    folder.mkdir()
    table = pd.read_csv(chexpert_train, nrows=400)
    table.to_csv(folder / "train.csv", index=False)
    table.iloc[:20].to_csv(folder / "valid.csv", index=False)
    frontal = table[table["Frontal/Lateral"] == "Frontal"]["Path"].tolist()
    for path in frontal[:-7]:  # the last 7 frontal images are missing
        _stand_in_image(tmp_path / path)
    out = tmp_path / "out"
    chexpert_main(["--chexpert-root", str(tmp_path), "--output-dir", str(out), "--check-files"])
    import datasets

    built = datasets.load_from_disk(str(out))
    assert load_dataset_meta(out)["image_root"] == str(tmp_path.absolute())
    assert len(built["train"]) + len(built["validation"]) == len(frontal) - 7
    assert all((tmp_path / p).is_file() for s in built for p in built[s]["image_path"])


# ----- NIH ChestX-ray14 ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nih_root(tmp_path_factory, nih_data_entry):
    """The real Data_Entry_2017_v2020.csv; the official lists stand in as a patient split of its real image names
    (test: patient ID divisible by 5), plus two names the table does not have."""
    root = tmp_path_factory.mktemp("nih")
    (root / "Data_Entry_2017_v2020.csv.gz").write_bytes(nih_data_entry.read_bytes())
    table = pd.read_csv(nih_data_entry)
    test = table["Patient ID"] % 5 == 0
    (root / "train_val_list.txt").write_text("\n".join(table["Image Index"][~test]) + "\nnot_an_image.png\n")
    (root / "test_list.txt").write_text("\n".join(table["Image Index"][test]) + "\n99999999_000.png\n")
    return root, table, test


def test_nih_real_table_official_split(nih_root):
    root, table, test = nih_root
    dataset, meta, summary = build_nih_chestxray14(root)
    assert meta["class_names"] == NIH_CLASSES and len(NIH_CLASSES) == 14
    assert len(dataset["test"]) == int(test.sum())
    assert len(dataset["train"]) + len(dataset["validation"]) == int((~test).sum()) == 112120 - int(test.sum())
    assert summary["skipped"] == {"malformed_rows": 0, "unknown_finding": 0, "train_val_not_in_data_entry": 1,
                                  "test_not_in_data_entry": 1}
    rows = _rows(dataset["train"]) | _rows(dataset["validation"])
    expected = np.isin(NIH_CLASSES, ["Cardiomegaly", "Emphysema"]).astype(float).tolist()
    assert rows["images/00000001_001.png"]["labels"] == expected  # "Cardiomegaly|Emphysema"
    no_finding = table[table["Finding Labels"] == "No Finding"]["Image Index"]
    assert sum(rows[f"images/{n}"]["labels"] == [0.0] * 14 for n in no_finding if f"images/{n}" in rows) > 1000
    # positives per class add up to the real table's counts
    all_positive = {c: sum(summary["positives"][s][c] for s in summary["positives"]) for c in NIH_CLASSES}
    assert all_positive["Effusion"] == int(table["Finding Labels"].str.contains("Effusion").sum())


def test_nih_check_files_finds_images_in_the_official_folders(tmp_path, nih_data_entry):
    table = pd.read_csv(nih_data_entry, nrows=60)
    (tmp_path / "Data_Entry_2017.csv").write_text(table.to_csv(index=False))
    (tmp_path / "train_val_list.txt").write_text("\n".join(table["Image Index"][:50]))
    (tmp_path / "test_list.txt").write_text("\n".join(table["Image Index"][50:]))
    for i, name in enumerate(table["Image Index"][:-3]):  # as the download unpacks: images_001/images/, images_002/...
        _stand_in_image(tmp_path / f"images_00{1 + i % 2}" / "images" / name)
    dataset, _, summary = build_nih_chestxray14(tmp_path, check_files=True)
    assert summary["skipped"]["test_missing_image_file"] == 3 and len(dataset["test"]) == 7
    assert all((tmp_path / p).is_file() for s in dataset for p in dataset[s]["image_path"])


# ----- RSNA ----------------------------------------------------------------------------------------------------------
def test_rsna_training_split_from_the_real_kaggle_table(tmp_path, rsna_labels):
    kaggle = pd.read_csv(rsna_labels).groupby("patientId")["Target"].max()
    patients = kaggle.index.tolist()
    (tmp_path / "stage_2_train_labels.csv.zip").write_bytes(rsna_labels.read_bytes())
    lists = {"val_list.txt": patients[:40], "test_list.txt": patients[40:100]}
    for name, chosen in lists.items():
        (tmp_path / name).write_text("".join(f"stage_2_train_images/{p}.dcm {kaggle[p]} \n" for p in chosen))
    dataset, meta, summary = build_rsna_classification(tmp_path)
    assert meta["problem_type"] == "single_label_classification" and meta["class_names"] == ["no pneumonia", "pneumonia"]
    assert (len(dataset["train"]), len(dataset["validation"]), len(dataset["test"])) == (26684 - 100, 40, 60)
    train = dict(zip(dataset["train"]["image_path"], dataset["train"]["label"]))
    assert sum(train.values()) + summary["positives"]["validation"]["pneumonia"] + summary["positives"]["test"]["pneumonia"] == 6012
    assert all(train[f"stage_2_train_images/{p}.dcm"] == kaggle[p] for p in patients[100:400])
    assert not set(train) & set(dataset["test"]["image_path"])
    # with --check-files only the stand-in DICOMs present stay
    for p in patients[100:110]:
        (tmp_path / "stage_2_train_images").mkdir(exist_ok=True)
        (tmp_path / "stage_2_train_images" / f"{p}.dcm").write_bytes(b"stand-in")
    checked, _, summary = build_rsna_classification(tmp_path, check_files=True)
    assert len(checked["train"]) == 10 and summary["skipped"]["train_missing_image_file"] == 26684 - 110
