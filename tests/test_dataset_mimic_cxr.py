"""The MIMIC-CXR pre-training builder on the hand-made fixture: exact rows, counts, variants, CLI, errors."""

import json
import zipfile

import datasets
import pytest

from alta_hf.dataset_scripts.common import DatasetBuildError, MissingColumnError
from alta_hf.dataset_scripts.mimic_cxr import PRETRAINING_FEATURES, build_mimic_cxr, main
from devtools.mimic_fixtures import write_fixture_jpgs, write_mimic_fixture


def jpg(subject, study, dicom):
    return f"files/p{str(subject)[:2]}/p{subject}/s{study}/{dicom}.jpg"


S1_PA = jpg(10000032, 50414267, "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014")
S1_LAT = jpg(10000032, 50414267, "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962")
S2_PA = jpg(10000032, 53189527, "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab")
S2_LAT = jpg(10000032, 53189527, "e084de3b-be89b11e-20fe3f9f-9c8d8dfe-4cfd202c")
S3_AP = jpg(10000032, 53911762, "68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714")
S4_AP = jpg(10000032, 56699142, "ea030e7a-2e3b1346-bc518786-7a8fd698-f673b44c")
V1_AP = jpg(10000764, 57375967, "5e000001-00000001-0c1d2e3f-4a5b6c7d-8e9fa0b1")
V1_LAT = jpg(10000764, 57375967, "9c000003-00000003-0c1d2e3f-4a5b6c7d-8e9fa0b1")
V3_PA = jpg(10000764, 52222222, "4b000005-00000005-0c1d2e3f-4a5b6c7d-8e9fa0b1")
V3_LL = jpg(10000764, 52222222, "4b000006-00000006-0c1d2e3f-4a5b6c7d-8e9fa0b1")
V4_PA = jpg(10000764, 53333333, "1c000007-00000007-0c1d2e3f-4a5b6c7d-8e9fa0b1")
T3_AP = jpg(10001217, 52067803, "9f00000a-0000000a-0c1d2e3f-4a5b6c7d-8e9fa0b1")
T4_AP = jpg(10001217, 55555555, "af00000b-0000000b-0c1d2e3f-4a5b6c7d-8e9fa0b1")
T4_LL = jpg(10001217, 55555555, "bf00000c-0000000c-0c1d2e3f-4a5b6c7d-8e9fa0b1")

COLUMNS = list(PRETRAINING_FEATURES)
S1_REPORT = ("Cardiac size cannot be evaluated. Large left pleural effusion is new. Small right effusion is new. The "
             "upper lungs are clear. Right lower lobe opacities are better seen in prior CT. There is no pneumothorax. "
             "There are mild degenerative changes in the thoracic spine. Large left pleural effusion")
EXPECTED = {
    "train": [
        (10000032, 50414267, S1_PA, S1_LAT, None, None, None, S1_REPORT),
        (10000032, 53189527, S2_PA, S2_LAT, 50414267, S1_PA, S1_LAT,
         "No acute cardiopulmonary process. Left effusion has resolved."),
        # two AP images: the smaller dicom_id; 08:05 parsed from "80556.875"
        (10000032, 53911762, S3_AP, None, 53189527, S2_PA, S2_LAT,
         "Portable AP upright view of the chest. Patient is rotated 15\u00b0 to the left. Lungs are clear. "
         "No pleural effusion or pneumothorax."),
        # same day at 10:20: its prior is the 08:05 study
        (10000032, 56699142, S4_AP, None, 53911762, S3_AP, None,
         "Endotracheal tube terminates 4 cm above the carina. 1. ET tube in standard position. 2. No pneumothorax."),
    ],
    "validate": [
        # frontal from ViewCode (empty ViewPosition); LATERAL preferred over an LL with a smaller dicom_id
        (10000764, 57375967, V1_AP, V1_LAT, None, None, None, "Heart size is normal. Lungs are clear. No pneumothorax."),
        # equal timestamps: neither is the other's prior; the lateral-only study in between is no prior
        (10000764, 52222222, V3_PA, V3_LL, 57375967, V1_AP, V1_LAT, "The lungs are clear. There is no effusion."),
        (10000764, 53333333, V4_PA, None, 57375967, V1_AP, V1_LAT,
         "The heart is normal in size. Left basilar opacity. Left basilar atelectasis."),
    ],
    # the prior was skipped (no report text) but has a frontal image, so it still serves as prior
    "test": [(10001217, 55555555, T4_AP, T4_LL, 52067803, T3_AP, None, "Interval increase in right pleural effusion.")],
}
EXPECTED_SUMMARY = {
    "builder": "mimic_cxr",
    "rows": {"train": 4, "validate": 3, "test": 1},
    "skipped": {"no_frontal_image": 2, "missing_report_file": 1, "unreadable_report_file": 0, "no_report_text": 1},
    "inputs": {
        "metadata_rows": 23, "malformed_metadata_rows": 3, "duplicate_dicom_ids": 0, "unknown_split_rows": 0,
        "images_without_split": 1, "images_used": 19, "studies": 12, "subjects": 3,
        "studies_with_inconsistent_images": 0, "non_utf8_reports": 1,
    },
    "views": {"PA": 6, "AP": 6, "LATERAL": 4, "LL": 3, "other": 1, "from_view_code": 2},
    "written": {"with_lateral": 5, "with_prior": 6, "with_prior_lateral": 4},
    "report_text_source": {"findings": 1, "findings+impression": 3, "impression": 2, "last_paragraph": 2},
}


def rows(dataset):
    return [tuple(row[c] for c in COLUMNS) for row in dataset]


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return write_mimic_fixture(tmp_path_factory.mktemp("mimic"))


@pytest.fixture(scope="module")
def built(fixture):
    return build_mimic_cxr(fixture.root, fixture.reports)


def test_exact_rows_per_split(built):
    dataset, _, _ = built
    assert list(dataset) == ["train", "validate", "test"]
    for split, expected in EXPECTED.items():
        assert dataset[split].features == PRETRAINING_FEATURES
        assert rows(dataset[split]) == expected, split


def test_summary_counts(built):
    assert built[2] == EXPECTED_SUMMARY


def test_meta(built, fixture):
    meta = built[1]
    assert meta["kind"] == "pretraining"
    assert meta["image_root"] == str(fixture.root.absolute())
    assert meta["splits"] == ["train", "validate", "test"] and meta["columns"] == COLUMNS


@pytest.mark.parametrize("compress, reports, version", [(True, "tree", "2.0.0"), (False, "tree", "2.1.0"), (True, "zip", "2.1.0")])
def test_gz_tables_extracted_reports_and_version_2_1_give_the_same_dataset(tmp_path, built, compress, reports, version):
    variant = write_mimic_fixture(tmp_path, compress=compress, reports=reports, version=version)
    dataset, _, summary = build_mimic_cxr(variant.root, variant.reports)
    for split in EXPECTED:
        assert rows(dataset[split]) == EXPECTED[split]
        assert dataset[split]._fingerprint == built[0][split]._fingerprint
    assert summary == EXPECTED_SUMMARY


def test_reports_folder_may_be_the_files_folder(tmp_path):
    variant = write_mimic_fixture(tmp_path, reports="tree")
    dataset, _, _ = build_mimic_cxr(variant.root, variant.reports / "files")
    assert rows(dataset["test"]) == EXPECTED["test"]


def test_full_report_mode(fixture):
    dataset, meta, summary = build_mimic_cxr(fixture.root, fixture.reports, report_sections="full")
    reports = dict(zip(dataset["train"]["study_id"], dataset["train"]["report"]))
    assert reports[56699142] == (
        "FINAL REPORT ADDENDUM: Findings were discussed with Dr. ___ by telephone at 10:45 on ___. "
        + "_" * 78 + " FINAL REPORT EXAMINATION: CHEST (PORTABLE AP) FINDINGS: Endotracheal tube terminates 4 cm above "
        "the carina. IMPRESSION: 1. ET tube in standard position. 2. No pneumothorax."
    )
    # in full mode the header-only report is usable text, the missing report file still is not
    assert summary["rows"] == {"train": 4, "validate": 3, "test": 2}
    assert summary["skipped"]["no_report_text"] == 0 and summary["report_text_source"] == {"full": 9}
    assert meta["report_sections"] == "full"
    assert dataset["test"]["report"][0] == "FINAL REPORT EXAMINATION: CHEST (PORTABLE AP) INDICATION: ___"


def test_check_files_drops_missing_images_before_selection(tmp_path):
    variant = write_mimic_fixture(tmp_path)
    write_fixture_jpgs(variant.root, skip=(S1_PA.rsplit("/", 1)[1][:-4], S2_LAT.rsplit("/", 1)[1][:-4]))
    dataset, _, summary = build_mimic_cxr(variant.root, variant.reports, check_files=True)
    assert rows(dataset["train"]) == [
        (10000032, 53189527, S2_PA, None, None, None, None, EXPECTED["train"][1][-1]),
        (10000032, 53911762, S3_AP, None, 53189527, S2_PA, None, EXPECTED["train"][2][-1]),
        EXPECTED["train"][3],
    ]
    assert summary["inputs"]["missing_image_files"] == 2
    assert summary["skipped"]["frontal_image_missing"] == 1 and summary["skipped"]["no_frontal_image"] == 2


def test_check_files_without_any_image_gives_empty_splits(tmp_path):
    variant = write_mimic_fixture(tmp_path)
    dataset, _, summary = build_mimic_cxr(variant.root, variant.reports, check_files=True)
    assert summary["rows"] == {"train": 0, "validate": 0, "test": 0}
    assert summary["inputs"]["missing_image_files"] == 19 and summary["skipped"]["frontal_image_missing"] == 10
    assert dataset["train"].features == PRETRAINING_FEATURES


def test_fingerprint_follows_content(tmp_path, built):
    again = build_mimic_cxr(*_paths(write_mimic_fixture(tmp_path / "a")))[0]
    changed = write_mimic_fixture(tmp_path / "b")
    with zipfile.ZipFile(changed.reports) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["files/p10/p10000032/s50414267.txt"] = b" IMPRESSION: \n \n Changed.\n"
    with zipfile.ZipFile(changed.reports, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    different = build_mimic_cxr(changed.root, changed.reports)[0]
    assert rows(different["train"])[0][-1] == "Changed."
    for split in EXPECTED:
        assert again[split]._fingerprint == built[0][split]._fingerprint
    assert different["train"]._fingerprint != built[0]["train"]._fingerprint
    assert different["validate"]._fingerprint == built[0]["validate"]._fingerprint


def _paths(fixture):
    return fixture.root, fixture.reports


def test_cli_writes_dataset_meta_and_summary(tmp_path, fixture, capsys):
    out = tmp_path / "out"
    main(["--root", str(fixture.root), "--reports", str(fixture.reports), "--output-dir", str(out)])
    printed = capsys.readouterr().out
    assert "skipped.no_frontal_image" in printed and "rows.train" in printed
    loaded = datasets.load_from_disk(str(out))
    for split in EXPECTED:
        assert rows(loaded[split]) == EXPECTED[split]
    meta = json.loads((out / "alta_dataset.json").read_text())
    assert meta["kind"] == "pretraining" and meta["image_root"] == str(fixture.root.absolute())
    assert json.loads((out / "build_summary.json").read_text()) == EXPECTED_SUMMARY
    # building again into the same folder replaces it and keeps the fingerprints
    first = loaded["train"]._fingerprint
    main(["--root", str(fixture.root), "--reports", str(fixture.reports), "--output-dir", str(out)])
    assert datasets.load_from_disk(str(out))["train"]._fingerprint == first


def test_missing_required_column_names_file_and_column(tmp_path):
    variant = write_mimic_fixture(tmp_path)
    metadata = variant.root / "mimic-cxr-2.0.0-metadata.csv"
    metadata.write_text(metadata.read_text().replace("StudyTime", "Time", 1))
    with pytest.raises(MissingColumnError, match=r"mimic-cxr-2\.0\.0-metadata\.csv: required column 'StudyTime'"):
        build_mimic_cxr(variant.root, variant.reports)


def test_missing_inputs_are_clear_errors(tmp_path, fixture):
    with pytest.raises(DatasetBuildError, match="mimic-cxr-2.0.0-metadata.csv.gz"):
        build_mimic_cxr(tmp_path, fixture.reports)
    with pytest.raises(DatasetBuildError, match="reports not found"):
        build_mimic_cxr(fixture.root, tmp_path / "nowhere.zip")
    not_zip = tmp_path / "reports.zip"
    not_zip.write_text("hello")
    with pytest.raises(DatasetBuildError, match="not a zip file"):
        build_mimic_cxr(fixture.root, not_zip)
    with pytest.raises(ValueError, match="report_sections"):
        build_mimic_cxr(fixture.root, fixture.reports, report_sections="impression")
