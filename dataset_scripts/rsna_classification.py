"""RSNA Pneumonia fine-tuning set: the zero-shot set's validation and test lists plus a training split.

    python -m alta_hf.dataset_scripts.rsna_classification --root RSNA --output-dir OUT [--val-list F] [--test-list F]
        [--labels F] [--check-files]

Same inputs as `dataset_scripts.rsna` (ALTA's/MRM's `val_list.txt` / `test_list.txt` and the Kaggle
`stage_2_train_labels.csv`, plain or zipped). `train` is every Kaggle training patient that neither list holds, at
`stage_2_train_images/<patientId>.dcm`, labelled `max(Target)` over its boxes; `validation` and `test` are the lists,
labelled by the lists. Single-label, classes `["no pneumonia", "pneumonia"]`.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pandas as pd

from .common import DatasetBuildError, builder_argument_parser, drop_missing_files, require_directory, save_and_report
from .labelled_sets import SINGLE_LABEL, classification_meta, classification_summary, labelled_dataset
from .rsna import CLASS_NAMES, LABELS_FILE, LIST_FILES, read_patient_labels, read_split_list

__all__ = ["build_rsna_classification", "main"]

BUILDER_VERSION = "1.0.0"
TRAIN_IMAGE_DIR = "stage_2_train_images"


def _labels_file(root: Path, labels) -> Path:
    if labels is not None:
        return Path(labels)
    for candidate in (root / LABELS_FILE, root / f"{LABELS_FILE}.zip"):
        if candidate.is_file():
            return candidate
    raise DatasetBuildError(f"{root}: neither {LABELS_FILE} nor {LABELS_FILE}.zip found (pass --labels)")


def build_rsna_classification(root, val_list=None, test_list=None, labels=None, check_files: bool = False):
    """Returns `(DatasetDict(train, validation, test), meta, summary)` for `save_dataset`."""
    root = require_directory(root, "RSNA root")
    list_paths = {"validation": Path(val_list or root / LIST_FILES["validation"]), "test": Path(test_list or root / LIST_FILES["test"])}
    labels_path = _labels_file(root, labels)
    patient_labels, malformed = read_patient_labels(labels_path)
    skipped = {"kaggle_malformed_rows": malformed}
    frames = {}
    for split, path in list_paths.items():
        frames[split], counts = read_split_list(path)
        skipped.update({f"{split}_{key}": value for key, value in counts.items()})
    listed = {PurePosixPath(p).stem for frame in frames.values() for p in frame["image_path"]}
    train = patient_labels[~patient_labels.index.isin(listed)]
    frames = {"train": pd.DataFrame({"image_path": [f"{TRAIN_IMAGE_DIR}/{p}.dcm" for p in train.index],
                                     "label": train.to_numpy()}), **frames}
    if check_files:
        frames = {s: drop_missing_files(f, "image_path", root, skipped, f"{s}_missing_image_file") for s, f in frames.items()}
    dataset = labelled_dataset(frames, CLASS_NAMES, SINGLE_LABEL, f"rsna_classification {BUILDER_VERSION}")
    meta = classification_meta(
        "rsna", root.absolute(), CLASS_NAMES, SINGLE_LABEL, data_terms="rsna", builder_version=BUILDER_VERSION,
        sources={"labels": str(labels_path.absolute()), **{s: str(p.absolute()) for s, p in list_paths.items()}},
    )
    summary = classification_summary("rsna_classification", frames, CLASS_NAMES, skipped,
                                     checks={"listed_patients_without_kaggle_label": len(listed - set(patient_labels.index))})
    return dataset, meta, summary


def main(argv=None) -> None:
    parser = builder_argument_parser("rsna_classification", __doc__, "drop (and count) entries whose DICOM file is missing")
    parser.add_argument("--root", required=True, help="RSNA folder with stage_2_train_images/")
    for split, flag in (("validation", "--val-list"), ("test", "--test-list")):
        parser.add_argument(flag, help=f"ALTA's/MRM's {split} list; default: ROOT/{LIST_FILES[split]}")
    parser.add_argument("--labels", help=f"Kaggle labels; default: ROOT/{LABELS_FILE}[.zip]")
    args = parser.parse_args(argv)
    built = build_rsna_classification(args.root, args.val_list, args.test_list, args.labels, args.check_files)
    save_and_report(built, args.output_dir, "RSNA Pneumonia classification", __doc__)


if __name__ == "__main__":
    main()
