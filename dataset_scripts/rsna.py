"""RSNA Pneumonia zero-shot set (validation and test) from ALTA's/MRM's split lists and the Kaggle files.

    python -m alta_hf.dataset_scripts.rsna --root RSNA --output-dir OUT [--val-list F] [--test-list F] [--labels F] [--check-files]

`RSNA` holds `stage_2_train_images/`, `stage_2_test_images/` (DICOM) and, by default, `val_list.txt`,
`test_list.txt` (lines `<path relative to RSNA> <label> `) and `stage_2_train_labels.csv`. The split
lists are the authority for labels: Kaggle publishes none for the test images. The Kaggle labels
(one row per box, collapsed to `max(Target)` per patientId) only cross-check the list labels of
training images; disagreements are counted, not fatal. Output splits `validation` and `test` with
`image_path` (the `.dcm` file) and `label` (ClassLabel `["no pneumonia", "pneumonia"]`), in list order.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import datasets
import pandas as pd

from .common import (
    drop_unusable_image_paths,
    builder_argument_parser,
    DatasetBuildError,
    content_fingerprint,
    drop_missing_files,
    frame_to_dataset,
    parse_int_column,
    read_csv_columns,
    require_directory,
    save_and_report,
    reports_build_errors,
)

BUILDER_VERSION = "1.0.0"
CLASS_NAMES = ["no pneumonia", "pneumonia"]
CLASS_PROMPTS = {"no pneumonia": ["There is no pneumonia"], "pneumonia": ["There is pneumonia"]}
FEATURES = datasets.Features({"image_path": datasets.Value("string"), "label": datasets.ClassLabel(names=CLASS_NAMES)})
LIST_FILES = {"validation": "val_list.txt", "test": "test_list.txt"}
LABELS_FILE = "stage_2_train_labels.csv"


def read_split_list(path: os.PathLike | str) -> tuple[pd.DataFrame, dict]:
    """`(frame[image_path, label], counts)` from a UTF-8 `path label` list; bad lines, duplicates and paths that leave
    the image root are counted and dropped; a list without one usable line is refused."""
    path = Path(path)
    if not path.is_file():
        raise DatasetBuildError(f"{path}: split list not found")
    rows, counts = [], {"malformed_lines": 0}
    for number, line in enumerate(_read_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1") or not fields[0].lower().endswith(".dcm"):
            counts["malformed_lines"] += 1
            continue
        rows.append((fields[0], int(fields[1])))
    if not rows:
        raise DatasetBuildError(f"{path}: no usable `path label` lines ({counts['malformed_lines']} malformed)")
    frame = drop_unusable_image_paths(pd.DataFrame(rows, columns=["image_path", "label"]), "image_path", counts)
    return frame, counts


def _read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 list file; another encoding would turn paths into `\ufffd` names that match no file."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DatasetBuildError(f"{path}: line {line} is not UTF-8 text ({error.reason} at byte {error.start})") from None


def _refuse_split_overlap(frames: dict, list_paths: dict) -> None:
    """An image in both validation and test would leak the threshold chosen on one into the score of the other."""
    shared = sorted(set(frames["validation"]["image_path"]) & set(frames["test"]["image_path"]))
    if shared:
        raise DatasetBuildError(
            f"{list_paths['validation']} and {list_paths['test']}: {len(shared)} image(s) are in both validation "
            f"and test, e.g. {shared[0]}; the split lists must be disjoint"
        )


def read_patient_labels(path: os.PathLike | str) -> tuple[pd.Series, int]:
    """`max(Target)` per patientId of `stage_2_train_labels.csv` (one row per box) and the number of bad rows."""
    frame, bad_lines = read_csv_columns(path, ["patientId", "Target"])
    target = parse_int_column(frame["Target"])
    valid = target.isin([0, 1]).to_numpy(dtype=bool) & frame["patientId"].notna().to_numpy()
    labels = target[valid].astype("int64").groupby(frame["patientId"][valid].str.strip()).max()
    return labels, bad_lines + int((~valid).sum())


def build_rsna(
    root: os.PathLike | str,
    val_list: os.PathLike | str | None = None,
    test_list: os.PathLike | str | None = None,
    labels: os.PathLike | str | None = None,
    check_files: bool = False,
) -> tuple[datasets.DatasetDict, dict, dict]:
    """Returns `(DatasetDict(validation, test), meta, summary)` for `save_dataset`."""
    root = require_directory(root, "RSNA root")
    list_paths = {"validation": Path(val_list or root / LIST_FILES["validation"]), "test": Path(test_list or root / LIST_FILES["test"])}
    labels_path = Path(labels) if labels is not None else root / LABELS_FILE
    kaggle = read_patient_labels(labels_path) if labels is not None or labels_path.is_file() else None

    frames, skipped, checks = {}, {}, {}
    for split, list_path in list_paths.items():
        frame, counts = read_split_list(list_path)
        skipped.update({f"{split}_{key}": value for key, value in counts.items()})
        if check_files:
            frame = drop_missing_files(frame, "image_path", root, skipped, f"{split}_missing_image_file")
        frames[split] = frame
        if kaggle is not None:
            patient = frame["image_path"].map(lambda p: PurePosixPath(p).stem)
            known = kaggle[0].reindex(patient.to_numpy())
            checks[f"{split}_label_mismatch_with_kaggle_csv"] = int((known.notna().to_numpy() & (known.to_numpy() != frame["label"].to_numpy())).sum())
            checks[f"{split}_not_in_kaggle_csv"] = int(known.isna().sum())
    _refuse_split_overlap(frames, list_paths)
    if kaggle is not None:
        checks["kaggle_patients"] = len(kaggle[0])
        checks["kaggle_positive_patients"] = int(kaggle[0].sum())
        checks["kaggle_malformed_rows"] = kaggle[1]

    fingerprint = content_fingerprint("rsna", BUILDER_VERSION)
    dataset = datasets.DatasetDict({split: frame_to_dataset(f, FEATURES, split, fingerprint) for split, f in frames.items()})
    summary = {
        "builder": "rsna",
        "rows": {split: len(f) for split, f in frames.items()},
        "positives": {split: int(f["label"].sum()) for split, f in frames.items()},
        "skipped": skipped,
        "checks": checks,
    }
    meta = {
        "kind": "rsna",
        "image_root": str(root.absolute()),
        "class_names": CLASS_NAMES,
        "class_prompts": CLASS_PROMPTS,
        "sources": {split: str(p.absolute()) for split, p in list_paths.items()},
        "builder_version": BUILDER_VERSION,
    }
    return dataset, meta, summary


@reports_build_errors
def main(argv=None) -> None:
    parser = builder_argument_parser("rsna", __doc__, "drop (and count) entries whose DICOM file is missing")
    parser.add_argument("--root", required=True, help="RSNA folder with stage_2_train_images/ and stage_2_test_images/")
    parser.add_argument("--val-list", help=f"default: ROOT/{LIST_FILES['validation']}")
    parser.add_argument("--test-list", help=f"default: ROOT/{LIST_FILES['test']}")
    parser.add_argument("--labels", help=f"Kaggle labels for the cross-check; default: ROOT/{LABELS_FILE} if present")
    args = parser.parse_args(argv)
    built = build_rsna(args.root, args.val_list, args.test_list, args.labels, args.check_files)
    save_and_report(built, args.output_dir, "RSNA Pneumonia", __doc__)


__all__ = ["CLASS_NAMES", "CLASS_PROMPTS", "build_rsna", "main", "read_patient_labels", "read_split_list"]

if __name__ == "__main__":
    main()
