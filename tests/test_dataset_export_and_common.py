"""The official train.csv exporter and the shared builder helpers (CSV reading, summary, saving)."""

import csv
import gzip
import json
from pathlib import Path

import datasets
import pandas as pd
import pytest

from alta_hf.dataset_scripts.common import (
    DatasetBuildError,
    content_fingerprint,
    find_table,
    format_summary,
    frame_to_dataset,
    read_csv_columns,
    save_dataset,
)
from alta_hf.dataset_scripts.export_official_csv import OFFICIAL_COLUMNS, export_official_csv, main
from alta_hf.dataset_scripts.mimic_cxr import main as build_main
from devtools.mimic_fixtures import write_mimic_fixture


@pytest.fixture(scope="module")
def built_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    fixture = write_mimic_fixture(folder)
    out = folder / "dataset"
    build_main(["--root", str(fixture.root), "--reports", str(fixture.reports), "--output-dir", str(out)])
    return out, fixture.root


def test_export_official_csv_relative(tmp_path, built_dir, capsys):
    out, _ = built_dir
    target = tmp_path / "MIMIC-CXR_dataset" / "train.csv"
    main(["--dataset", str(out), "--output", str(target)])
    assert "wrote 4 rows" in capsys.readouterr().out
    with open(target, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == list(OFFICIAL_COLUMNS)
    assert rows[3] == [
        "files/p10/p10000032/s53911762/68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714.jpg", "-1",
        "files/p10/p10000032/s53189527/2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab.jpg",
        "files/p10/p10000032/s53189527/e084de3b-be89b11e-20fe3f9f-9c8d8dfe-4cfd202c.jpg",
        "Portable AP upright view of the chest. Patient is rotated 15\u00b0 to the left. Lungs are clear. "
        "No pleural effusion or pneumothorax.",
    ]
    assert [row[1:4] for row in rows[1:3]] == [
        ["files/p10/p10000032/s50414267/174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962.jpg", "-1", "-1"],
        ["files/p10/p10000032/s53189527/e084de3b-be89b11e-20fe3f9f-9c8d8dfe-4cfd202c.jpg",
         "files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg",
         "files/p10/p10000032/s50414267/174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962.jpg"],
    ]
    # what the official loader does: pandas, then `value != "-1"` tests on strings
    frame = pd.read_csv(target)
    assert (frame["auxview_image_path"] == "-1").sum() == 2 and frame["report"].map(type).eq(str).all()


def test_export_absolute_and_all_missing_column_warning(tmp_path, built_dir):
    out, root = built_dir
    target = tmp_path / "test.csv"
    with pytest.warns(UserWarning, match="last_auxview_image_path hold only '-1'"):
        counts = export_official_csv(out, target, split="test", absolute=True)
    assert counts == {"rows": 1, "all_missing_columns": ["last_auxview_image_path"], "views_present": {
        "image_path": 1, "auxview_image_path": 1, "last_image_path": 1, "last_auxview_image_path": 0}}
    row = next(csv.DictReader(open(target, newline="")))
    assert row["image_path"] == str(root.absolute() / "files/p10/p10001217/s55555555/af00000b-0000000b-0c1d2e3f-4a5b6c7d-8e9fa0b1.jpg")
    assert row["last_auxview_image_path"] == "-1"
    with pytest.raises(DatasetBuildError, match="no split 'valid'"):
        export_official_csv(out, target, split="valid")


def test_find_table_accepts_csv_and_gz(tmp_path):
    (tmp_path / "x.csv.gz").write_bytes(gzip.compress(b"a,b\n1,2\n"))
    assert find_table(tmp_path, "x") == tmp_path / "x.csv.gz"
    (tmp_path / "x.csv").write_text("a,b\n")
    assert find_table(tmp_path, "x") == tmp_path / "x.csv"
    with pytest.raises(DatasetBuildError, match="neither y.csv nor y.csv.gz"):
        find_table(tmp_path, "y")


@pytest.mark.parametrize("engine", ["c", "pyarrow"])
def test_read_csv_columns_counts_bad_lines(tmp_path, engine):
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1,,3\n4,5,6,7\n8,9,10\n")
    frame, skipped = read_csv_columns(path, ["a", "c"], optional=["b", "z"], engine=engine)
    assert list(frame.columns) == ["a", "c", "b"] and skipped == 1
    assert frame["a"].tolist() == ["1", "8"] and frame["c"].tolist() == ["3", "10"]
    assert pd.isna(frame["b"].iloc[0]) and frame["b"].iloc[1] == "9"
    path.write_bytes(b"\x00\xff garbage")
    with pytest.raises(DatasetBuildError):
        read_csv_columns(path, ["a"])


def test_format_summary_table():
    table = format_summary({"rows": {"train": 12345, "test": 7}, "ok": True, "name": "x"}, title="T")
    lines = table.splitlines()
    assert lines[0] == "T" and set(lines[1]) == {"-"} and set(lines[-1]) == {"-"}
    assert lines[2].split() == ["rows.train", "12,345"] and lines[3].split() == ["rows.test", "7"]
    assert lines[4].split() == ["ok", "True"] and lines[5].split() == ["name", "x"]


def test_content_fingerprint_and_save_dataset(tmp_path):
    features = datasets.Features({"a": datasets.Value("int64"), "p": datasets.Value("string")})
    frame = pd.DataFrame({"a": [1, 2], "p": ["x", None]})
    assert content_fingerprint("b", frame) == content_fingerprint("b", frame.copy())
    assert content_fingerprint("b", frame) != content_fingerprint("b", frame.iloc[::-1])
    dataset = frame_to_dataset(frame, features, "test", "seed")
    assert dataset[1] == {"a": 2, "p": None}
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="image_root"):
        save_dataset(dataset, out, {"kind": "demo"}, {})
    save_dataset(dataset, out, {"kind": "demo", "image_root": "imgs"}, {"rows": 2})
    assert json.loads((out / "alta_dataset.json").read_text()) == {"kind": "demo", "image_root": str(Path("imgs").absolute())}
    assert json.loads((out / "build_summary.json").read_text()) == {"rows": 2}
    save_dataset(dataset.select([0]), out, {"kind": "demo", "image_root": str(tmp_path)}, {"rows": 1})  # replaced
    assert datasets.load_from_disk(str(out)).num_rows == 1
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folders left behind
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DatasetBuildError, match="refusing to overwrite"):
        save_dataset(dataset, other, {"kind": "demo", "image_root": str(tmp_path)}, {})
