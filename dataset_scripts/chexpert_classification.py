"""CheXpert fine-tuning set: the five competition labels of the official `train.csv` / `valid.csv`, multi-label.

    python -m alta_hf.dataset_scripts.chexpert_classification --chexpert-root DIR --output-dir OUT
        [--train-csv F] [--valid-csv F] [--uncertain ones|zeros] [--all-views] [--validation-fraction 0.05]
        [--seed 0] [--check-files]

`DIR` contains `CheXpert-v1.0-small/` (the CSVs' `Path` column is relative to it); the CSVs default to
`DIR/CheXpert-v1.0-small/{train,valid}.csv`. Labels: 1 positive, 0 and blank negative, -1 (uncertain) by the
`--uncertain` policy (U-ones, the default, or U-zeros). As in MRM, the official validation set (202 studies, labelled
by radiologists) is the `test` split, and `validation` is a seeded patient-level part of `train.csv`; only frontal
views are kept unless `--all-views`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .class_prompts import CHEXPERT_COMPETITION_CLASSES
from .common import builder_argument_parser, drop_missing_files, read_csv_columns, require_directory, save_and_report
from .labelled_sets import MULTI_LABEL, classification_meta, classification_summary, hold_out_patients, labelled_dataset

__all__ = ["CLASS_NAMES", "UNCERTAIN_POLICIES", "build_chexpert_classification", "main", "read_chexpert_table"]

BUILDER_VERSION = "1.0.0"
CLASS_NAMES = list(CHEXPERT_COMPETITION_CLASSES)
UNCERTAIN_POLICIES = {"ones": 1.0, "zeros": 0.0}
VIEW_COLUMN = "Frontal/Lateral"


def read_chexpert_table(path, uncertain: str, frontal_only: bool, skipped: dict, split: str) -> pd.DataFrame:
    """`image_path`, `patient` and `labels` (5 floats) of a CheXpert CSV; unusable rows are counted in `skipped`."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {sorted(UNCERTAIN_POLICIES)}, got {uncertain!r}")
    frame, bad_lines = read_csv_columns(path, ["Path", *CLASS_NAMES], optional=[VIEW_COLUMN])
    values = frame[CLASS_NAMES].apply(pd.to_numeric, errors="coerce")
    bad_value = ~(values.isin([1.0, 0.0, -1.0]) | values.isna()).all(axis=1) | frame["Path"].isna()
    skipped[f"{split}_malformed_rows"] = bad_lines + int(bad_value.sum())
    keep = ~bad_value
    if frontal_only and VIEW_COLUMN in frame:
        lateral = frame[VIEW_COLUMN].fillna("").str.strip().str.lower() == "lateral"
        skipped[f"{split}_lateral_views"] = int((lateral & keep).sum())
        keep &= ~lateral
    labels = values[keep].fillna(0.0).replace(-1.0, UNCERTAIN_POLICIES[uncertain]).to_numpy(dtype=np.float32)
    paths = frame.loc[keep, "Path"].str.strip()
    return pd.DataFrame({
        "image_path": paths.to_numpy(),
        # CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg
        "patient": paths.str.split("/").str[2].to_numpy(),
        "labels": [tuple(row) for row in labels.tolist()],  # hashable (the content fingerprint hashes rows)
    })


def build_chexpert_classification(
    chexpert_root: os.PathLike | str,
    train_csv: os.PathLike | str | None = None,
    valid_csv: os.PathLike | str | None = None,
    uncertain: str = "ones",
    frontal_only: bool = True,
    validation_fraction: float = 0.05,
    seed: int = 0,
    check_files: bool = False,
):
    """Returns `(DatasetDict(train, validation, test), meta, summary)` for `save_dataset`."""
    root = require_directory(chexpert_root, "CheXpert root")
    train_csv = Path(train_csv or root / "CheXpert-v1.0-small" / "train.csv")
    valid_csv = Path(valid_csv or root / "CheXpert-v1.0-small" / "valid.csv")
    skipped: dict = {}
    train = read_chexpert_table(train_csv, uncertain, frontal_only, skipped, "train")
    held_out = hold_out_patients(train["patient"], validation_fraction, seed)
    frames = {
        "train": train[~held_out],
        "validation": train[held_out],
        "test": read_chexpert_table(valid_csv, uncertain, frontal_only, skipped, "test"),
    }
    if check_files:
        frames = {s: drop_missing_files(f, "image_path", root, skipped, f"{s}_missing_image_file") for s, f in frames.items()}
    options = {"uncertain": uncertain, "frontal_only": frontal_only, "validation_fraction": validation_fraction, "seed": seed}
    dataset = labelled_dataset(frames, CLASS_NAMES, MULTI_LABEL, f"chexpert_classification {BUILDER_VERSION} {options}")
    meta = classification_meta(
        "chexpert", root.absolute(), CLASS_NAMES, MULTI_LABEL, data_terms="chexpert", options=options,
        builder_version=BUILDER_VERSION,
        sources={"train": str(train_csv.absolute()), "test": str(valid_csv.absolute())},
    )
    summary = classification_summary(
        "chexpert_classification", frames, CLASS_NAMES, skipped, patients={s: int(f["patient"].nunique()) for s, f in frames.items()}
    )
    return dataset, meta, summary


def main(argv=None) -> None:
    parser = builder_argument_parser("chexpert_classification", __doc__, "drop (and count) rows whose image is missing")
    parser.add_argument("--chexpert-root", required=True, help="folder that contains CheXpert-v1.0-small/")
    parser.add_argument("--train-csv", help="default: ROOT/CheXpert-v1.0-small/train.csv")
    parser.add_argument("--valid-csv", help="default: ROOT/CheXpert-v1.0-small/valid.csv (the test split)")
    parser.add_argument("--uncertain", choices=sorted(UNCERTAIN_POLICIES), default="ones", help="U-ones or U-zeros")
    parser.add_argument("--all-views", action="store_true", help="keep lateral views too")
    parser.add_argument("--validation-fraction", type=float, default=0.05, help="patients of train.csv held out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    built = build_chexpert_classification(
        args.chexpert_root, args.train_csv, args.valid_csv, args.uncertain, not args.all_views,
        args.validation_fraction, args.seed, args.check_files,
    )
    save_and_report(built, args.output_dir, "CheXpert classification", __doc__)


if __name__ == "__main__":
    main()
