"""CheXpert 5x200 (zero-shot classification and retrieval) from the GLoRIA/ALTA `chexpert_5x200.csv`.

    python -m alta_hf.dataset_scripts.chexpert_5x200 --csv chexpert_5x200.csv --chexpert-root DIR --output-dir OUT [--check-files]

`DIR` is the folder that contains `CheXpert-v1.0-small/` (the CSV's `Path` column is relative to it).
The 1,000 rows cannot be rebuilt from public data (GLoRIA sampled them without a seed and the
impressions come from a private file), so the CSV is an input. Output: split `test` with
`image_path`, `label` (ClassLabel: Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion)
and `report` (the raw `Report Impression`), rows in file order; `alta_dataset.json` carries
`class_names` and `class_prompts` (GLoRIA's table, every combination).
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from .class_prompts import CHEXPERT_COMPETITION_CLASSES, chexpert_class_prompts
from .common import (
    drop_unusable_image_paths,
    builder_argument_parser,
    content_fingerprint,
    drop_missing_files,
    frame_to_dataset,
    read_csv_columns,
    require_directory,
    save_and_report,
    reports_build_errors,
)

BUILDER_VERSION = "1.0.0"
CLASS_NAMES = list(CHEXPERT_COMPETITION_CLASSES)
IMPRESSION_COLUMN = "Report Impression"
FEATURES = datasets.Features({
    "image_path": datasets.Value("string"),
    "label": datasets.ClassLabel(names=CLASS_NAMES),
    "report": datasets.Value("string"),
})


def single_positive_labels(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Per row: the index in `columns` of the only `1` (empty cells read as 0), or -1 when there is not exactly one."""
    values = frame[columns].apply(pd.to_numeric, errors="coerce").fillna(0).to_numpy()
    positive = values == 1
    return np.where(positive.sum(axis=1) == 1, positive.argmax(axis=1), -1)


def build_chexpert_5x200(
    csv_path: os.PathLike | str, chexpert_root: os.PathLike | str, check_files: bool = False
) -> tuple[datasets.DatasetDict, dict, dict]:
    """Returns `(DatasetDict(test=...), meta, summary)` for `save_dataset`."""
    root = require_directory(chexpert_root, "CheXpert root")
    frame, bad_lines = read_csv_columns(csv_path, ["Path", *CLASS_NAMES, IMPRESSION_COLUMN])
    skipped = {"malformed_rows": bad_lines + int(frame["Path"].isna().sum())}
    frame = frame[frame["Path"].notna()]
    labels = single_positive_labels(frame, CLASS_NAMES)
    skipped["not_exactly_one_positive"] = int((labels < 0).sum())
    frame = pd.DataFrame({
        "image_path": frame["Path"].str.strip(),
        "label": labels,
        "report": frame[IMPRESSION_COLUMN].fillna(""),
    })[labels >= 0]
    frame = drop_unusable_image_paths(frame, "image_path", skipped)
    if check_files:
        frame = drop_missing_files(frame, "image_path", root, skipped)

    per_class = np.bincount(frame["label"], minlength=len(CLASS_NAMES))
    in_blocks = bool(len(set(per_class)) == 1 and (frame["label"].to_numpy() == np.repeat(np.arange(len(CLASS_NAMES)), per_class[0])).all())
    fingerprint = content_fingerprint("chexpert_5x200", BUILDER_VERSION)
    dataset = datasets.DatasetDict({"test": frame_to_dataset(frame, FEATURES, "test", fingerprint)})
    summary = {
        "builder": "chexpert_5x200",
        "rows": {"test": len(frame)},
        "skipped": skipped,
        "per_class": dict(zip(CLASS_NAMES, per_class.tolist())),
        "checks": {
            "blocks_in_class_order": in_blocks,
            "empty_reports": int((frame["report"].str.strip() == "").sum()),
            "image_folder_present": (root / Path(frame["image_path"].iloc[0]).parts[0]).is_dir() if len(frame) else False,
        },
    }
    meta = {
        "kind": "chexpert_5x200",
        "image_root": str(root.absolute()),
        "class_names": CLASS_NAMES,
        "class_prompts": chexpert_class_prompts(),
        "source": str(Path(csv_path).absolute()),
        "builder_version": BUILDER_VERSION,
    }
    return dataset, meta, summary


@reports_build_errors
def main(argv=None) -> None:
    parser = builder_argument_parser("chexpert_5x200", __doc__, "drop (and count) rows whose image file is missing")
    parser.add_argument("--csv", required=True, help="chexpert_5x200.csv (GLoRIA/ALTA format, 1,000 rows)")
    parser.add_argument("--chexpert-root", required=True, help="folder that contains CheXpert-v1.0-small/")
    args = parser.parse_args(argv)
    built = build_chexpert_5x200(args.csv, args.chexpert_root, args.check_files)
    save_and_report(built, args.output_dir, "CheXpert 5x200", __doc__)


__all__ = ["CLASS_NAMES", "FEATURES", "build_chexpert_5x200", "main", "single_positive_labels"]

if __name__ == "__main__":
    main()
