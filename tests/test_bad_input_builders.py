"""Bad input for the dataset builders (issue 17): stray quotes, paths that leave the image root, duplicates, an RSNA
image in both validation and test, header-only and empty inputs, non-UTF-8 list files. Each case asserts the error
naming the file (and line), or the exact rows that remain and the skipped-and-counted figures."""

import json

import datasets
import pandas as pd
import pytest

from alta_hf.dataset_scripts import chexpert_5x200, mimic_cxr, rsna
from alta_hf.dataset_scripts.common import DatasetBuildError, escapes_image_root, load_dataset_meta, read_csv_columns
from devtools.mimic_fixtures import write_mimic_fixture
from tests.fixtures_eval_sets import write_chexpert_5x200, write_rsna

METADATA = "mimic-cxr-2.0.0-metadata.csv"


# ----- CSV lines that cannot be read -------------------------------------------------------------------------------
def _with_stray_quote(path, line_number: int) -> str:
    lines = path.read_text().splitlines()
    fields = lines[line_number - 1].split(",")
    fields[4] = '"' + fields[4]  # an unterminated quote in ViewPosition
    lines[line_number - 1] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    return lines[line_number - 1]


def test_a_stray_quote_in_the_mimic_metadata_stops_the_build_naming_the_line(tmp_path, capsys):
    fixture = write_mimic_fixture(tmp_path)
    metadata = fixture.root / METADATA
    total = len(metadata.read_text().splitlines()) - 1
    bad = _with_stray_quote(metadata, 3)  # the reader would swallow every line after it
    with pytest.raises(DatasetBuildError, match=rf"{METADATA}: \d+ of {total} data lines cannot be read") as info:
        mimic_cxr.build_mimic_cxr(fixture.root, fixture.reports)
    assert f"the first is line 3: {bad[:30]!r}"[:-1] in str(info.value)
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="cannot be read") as exit_info:  # the CLI: one line, exit status 1
        mimic_cxr.main(["--root", str(fixture.root), "--reports", str(fixture.reports), "--output-dir", str(out)])
    assert str(exit_info.value.code).startswith("error: ") and not out.exists()


def test_a_few_unreadable_lines_are_counted_and_the_first_named(tmp_path):
    fixture = write_mimic_fixture(tmp_path)
    metadata = fixture.root / METADATA
    clean_rows = mimic_cxr.build_mimic_cxr(fixture.root, fixture.reports)[2]["inputs"]["malformed_metadata_rows"]
    lines = metadata.read_text().splitlines()
    _with_stray_quote(metadata, len(lines))  # the last line: nothing after it to swallow
    with pytest.warns(UserWarning, match=rf"{METADATA}: 2 of {len(lines) - 1} data lines cannot be read.*line \d+"):
        summary = mimic_cxr.build_mimic_cxr(fixture.root, fixture.reports)[2]
    assert summary["inputs"]["malformed_metadata_rows"] == clean_rows + 1


def test_unreadable_lines_past_the_threshold_fail_with_the_c_engine_too(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + "".join(f"{k},{k}\n" for k in range(50)) + "".join(f"{k},{k},x\n" for k in range(10)))
    with pytest.raises(DatasetBuildError, match=r"t\.csv: 10 of 60 data lines cannot be read .*the first is Skipping line 52"):
        read_csv_columns(path, ["a"])
    path.write_text('a,b\n1,"2\n3,4\n')
    with pytest.raises(DatasetBuildError, match=r"t\.csv: not a readable CSV file .*EOF inside string"):
        read_csv_columns(path, ["a"])


@pytest.mark.parametrize("header_only, problem", [(False, "the file is empty"), (True, "the file has a header but no data lines")])
def test_empty_and_header_only_tables_are_refused(tmp_path, header_only, problem):
    csv_path = tmp_path / "chexpert_5x200.csv"
    write_chexpert_5x200(csv_path, per_class=1)
    csv_path.write_text(csv_path.read_text().splitlines()[0] + "\n" if header_only else "")
    (tmp_path / "root").mkdir()
    with pytest.raises(SystemExit, match=rf"error: {csv_path}: {problem}"):
        chexpert_5x200.main(["--csv", str(csv_path), "--chexpert-root", str(tmp_path / "root"),
                             "--output-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_a_build_where_every_row_is_skipped_is_refused(tmp_path):
    csv_path = tmp_path / "chexpert_5x200.csv"
    write_chexpert_5x200(csv_path, per_class=1)
    frame = pd.read_csv(csv_path, index_col=0)
    frame["Atelectasis"] = frame["Edema"] = 1.0  # now every row has two positives or more
    frame.to_csv(csv_path)
    (tmp_path / "root").mkdir()
    with pytest.raises(SystemExit, match=r"no usable rows in any split(.|\n)*not_exactly_one_positive +5"):
        chexpert_5x200.main(["--csv", str(csv_path), "--chexpert-root", str(tmp_path / "root"),
                             "--output-dir", str(tmp_path / "out")])


# ----- paths and duplicates ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path, outside", [
    ("../../etc/passwd", True), ("/etc/passwd", True), ("C:\\images\\x.jpg", True), ("a\\..\\..\\b.jpg", True),
    ("CheXpert-v1.0-small/train/patient1/study1/view1.jpg", False), ("files/p10/..x/y.jpg", False),
])
def test_escapes_image_root(path, outside):
    assert escapes_image_root(path) is outside


def test_chexpert_paths_outside_the_root_and_duplicates_are_dropped_and_counted(tmp_path):
    csv_path = tmp_path / "chexpert_5x200.csv"
    expected = write_chexpert_5x200(csv_path, per_class=2)
    frame = pd.read_csv(csv_path, index_col=0)
    frame.loc[1, "Path"] = "../../etc/passwd"
    frame.loc[3, "Path"] = "/abs/olute.jpg"
    frame = pd.concat([frame, frame.iloc[[4]]], ignore_index=True)  # a repeated row
    frame.to_csv(csv_path)
    (tmp_path / "root").mkdir()
    with pytest.warns(UserWarning, match="2 image_path value.*leave the image root.*etc/passwd"):
        dataset, _, summary = chexpert_5x200.build_chexpert_5x200(csv_path, tmp_path / "root")
    kept = [row for index, row in enumerate(expected) if index not in (1, 3)]
    assert list(zip(dataset["test"]["image_path"], dataset["test"]["label"])) == [(p, label) for p, label, _ in kept]
    assert summary["skipped"]["path_outside_image_root"] == 2 and summary["skipped"]["duplicate_images"] == 1


def test_mimic_dicom_ids_that_are_paths_are_malformed(tmp_path):
    fixture = write_mimic_fixture(tmp_path)
    metadata = fixture.root / METADATA
    clean = mimic_cxr.build_mimic_cxr(fixture.root, fixture.reports)
    lines = metadata.read_text().splitlines()
    first_id = lines[1].split(",")[0]
    metadata.write_text("\n".join([lines[0], lines[1].replace(first_id, "../../../etc/passwd", 1)] + lines[2:]) + "\n")
    built = mimic_cxr.build_mimic_cxr(fixture.root, fixture.reports)
    assert built[2]["inputs"]["malformed_metadata_rows"] == clean[2]["inputs"]["malformed_metadata_rows"] + 1
    paths = [p for split in built[0].values() for column in ("frontal_path", "lateral_path") for p in split[column] if p]
    assert paths and not any(".." in p for p in paths)


# ----- RSNA lists --------------------------------------------------------------------------------------------------
def test_rsna_image_in_both_validation_and_test_is_refused(tmp_path):
    root = tmp_path / "rsna"
    expected = write_rsna(root)
    shared = expected["validation"][2][0]
    with open(root / "test_list.txt", "a") as handle:
        handle.write(f"{shared} 1\n")
    with pytest.raises(DatasetBuildError, match=rf"val_list.txt and .*test_list.txt: 1 image\(s\) are in both "
                                                rf"validation and test, e.g. {shared}"):
        rsna.build_rsna(root)


def test_rsna_paths_outside_the_root_and_duplicates_are_counted(tmp_path):
    root = tmp_path / "rsna"
    expected = write_rsna(root)
    with open(root / "val_list.txt", "a") as handle:
        handle.write("../../etc/shadow.dcm 0\n/data/other.dcm 1\n" + f"{expected['validation'][1][0]} 0\n")
    with pytest.warns(UserWarning, match="leave the image root"):
        dataset, _, summary = rsna.build_rsna(root)
    assert list(zip(dataset["validation"]["image_path"], dataset["validation"]["label"])) == expected["validation"]
    assert summary["skipped"]["validation_path_outside_image_root"] == 2
    assert summary["skipped"]["validation_duplicate_images"] == 1


def test_rsna_non_utf8_list_names_the_line(tmp_path):
    root = tmp_path / "rsna"
    write_rsna(root)
    lines = (root / "val_list.txt").read_bytes().splitlines()
    lines[3] = "stage_2_train_images/r\u00f6ntgen.dcm 1".encode("latin-1")
    (root / "val_list.txt").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DatasetBuildError, match=r"val_list\.txt: line 4 is not UTF-8 text"):
        rsna.build_rsna(root)


@pytest.mark.parametrize("content", ["", "\n\n", "not a list line\n"])
def test_rsna_list_without_usable_lines_is_refused(tmp_path, content):
    root = tmp_path / "rsna"
    write_rsna(root)
    (root / "test_list.txt").write_text(content)
    with pytest.raises(DatasetBuildError, match=r"test_list\.txt: no usable `path label` lines"):
        rsna.build_rsna(root)


def test_non_utf8_dataset_metadata_is_named(tmp_path):
    (tmp_path / "alta_dataset.json").write_bytes(json.dumps({"kind": "r\u00f6"}, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(DatasetBuildError, match=r"alta_dataset\.json: not a UTF-8 JSON file"):
        load_dataset_meta(tmp_path)


def test_a_good_build_is_unchanged(tmp_path):
    """The checks refuse nothing valid: the hand-made MIMIC fixture still gives its rows."""
    fixture = write_mimic_fixture(tmp_path)
    dataset = mimic_cxr.build_mimic_cxr(fixture.root, fixture.reports)[0]
    assert isinstance(dataset, datasets.DatasetDict) and sum(split.num_rows for split in dataset.values()) > 0
