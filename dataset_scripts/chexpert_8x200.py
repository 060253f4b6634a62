"""CheXpert 8x200 (image-to-image and text-to-image retrieval) from ConVIRT's published files.

    python -m alta_hf.dataset_scripts.chexpert_8x200 --convirt-dir DIR --chexpert-root ROOT --output-dir OUT [--check-files]

`DIR` holds ConVIRT's `image-retrieval/candidate.csv` (1,600 rows, CheXpert columns, each row with
exactly one positive label), `image-retrieval/query.csv` (`Variable,Path`, 80 rows) and
`text-retrieval/query.csv` (`Variable,Text`, 40 rows). `ROOT` contains `CheXpert-v1.0-small/`.
Output splits: `candidates` and `image_queries` (`image_path`, `label`) and `text_queries` (`text`,
`label`); `label` is a ClassLabel over the 8 classes in alphabetical order. Texts are kept verbatim,
typos included.
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from .chexpert_5x200 import single_positive_labels
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
CLASS_NAMES = ["Atelectasis", "Cardiomegaly", "Edema", "Fracture", "No Finding", "Pleural Effusion", "Pneumonia", "Pneumothorax"]
CHEXPERT_LABEL_COLUMNS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
    "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices",
]
LABEL = datasets.ClassLabel(names=CLASS_NAMES)
IMAGE_FEATURES = datasets.Features({"image_path": datasets.Value("string"), "label": LABEL})
TEXT_FEATURES = datasets.Features({"text": datasets.Value("string"), "label": LABEL})
CANDIDATES = Path("image-retrieval") / "candidate.csv"
IMAGE_QUERIES = Path("image-retrieval") / "query.csv"
TEXT_QUERIES = Path("text-retrieval") / "query.csv"


def _candidates(path: Path, skipped: dict) -> pd.DataFrame:
    frame, bad_lines = read_csv_columns(path, ["Path", *CHEXPERT_LABEL_COLUMNS])
    skipped["candidates_malformed_rows"] = bad_lines + int(frame["Path"].isna().sum())
    frame = frame[frame["Path"].notna()]
    uncertain = (frame[CHEXPERT_LABEL_COLUMNS].apply(pd.to_numeric, errors="coerce") == -1).any(axis=1).to_numpy()
    positive = single_positive_labels(frame, CHEXPERT_LABEL_COLUMNS)
    names = np.array(CHEXPERT_LABEL_COLUMNS + [""])[positive]  # -1 (no single positive) -> ""
    usable = ~uncertain & np.isin(names, CLASS_NAMES)
    skipped["candidates_not_single_positive_of_8"] = int((~usable).sum())
    frame = pd.DataFrame({"image_path": frame["Path"].str.strip(), "label": [LABEL.str2int(n) if n in CLASS_NAMES else -1 for n in names]})[usable]
    return drop_unusable_image_paths(frame, "image_path", skipped, "candidates_")


def _queries(path: Path, column: str, out_column: str, skipped: dict, prefix: str) -> pd.DataFrame:
    frame, bad_lines = read_csv_columns(path, ["Variable", column])
    names = frame["Variable"].fillna("").str.strip()
    usable = names.isin(CLASS_NAMES) & frame[column].notna()
    skipped[f"{prefix}_unknown_class_or_empty"] = int((~usable).sum()) + bad_lines
    frame, names = frame[usable], names[usable]
    values = frame[column].str.strip() if out_column == "image_path" else frame[column]
    frame = pd.DataFrame({out_column: values, "label": names.map(LABEL.str2int)})
    return drop_unusable_image_paths(frame, out_column, skipped, f"{prefix}_") if out_column == "image_path" else frame


def build_chexpert_8x200(
    convirt_dir: os.PathLike | str, chexpert_root: os.PathLike | str, check_files: bool = False
) -> tuple[datasets.DatasetDict, dict, dict]:
    """Returns `(DatasetDict(candidates, image_queries, text_queries), meta, summary)` for `save_dataset`."""
    convirt_dir = require_directory(convirt_dir, "ConVIRT folder")
    root = require_directory(chexpert_root, "CheXpert root")
    skipped: dict = {}
    candidates = _candidates(convirt_dir / CANDIDATES, skipped)
    image_queries = _queries(convirt_dir / IMAGE_QUERIES, "Path", "image_path", skipped, "image_queries")
    text_queries = _queries(convirt_dir / TEXT_QUERIES, "Text", "text", skipped, "text_queries")
    if check_files:
        candidates = drop_missing_files(candidates, "image_path", root, skipped, "candidates_missing_image_file")
        image_queries = drop_missing_files(image_queries, "image_path", root, skipped, "image_queries_missing_image_file")
    overlap = len(set(candidates["image_path"]) & set(image_queries["image_path"]))

    fingerprint = content_fingerprint("chexpert_8x200", BUILDER_VERSION)
    frames = {"candidates": (candidates, IMAGE_FEATURES), "image_queries": (image_queries, IMAGE_FEATURES),
              "text_queries": (text_queries, TEXT_FEATURES)}
    dataset = datasets.DatasetDict({split: frame_to_dataset(f, feats, split, fingerprint) for split, (f, feats) in frames.items()})
    summary = {
        "builder": "chexpert_8x200",
        "rows": {split: len(f) for split, (f, _) in frames.items()},
        "skipped": skipped,
        "per_class": {
            split: dict(zip(CLASS_NAMES, np.bincount(f["label"], minlength=len(CLASS_NAMES)).tolist()))
            for split, (f, _) in frames.items()
        },
        "checks": {"query_images_also_candidates": overlap},
    }
    meta = {
        "kind": "chexpert_8x200",
        "image_root": str(root.absolute()),
        "class_names": CLASS_NAMES,
        "source": str(convirt_dir.absolute()),
        "builder_version": BUILDER_VERSION,
    }
    return dataset, meta, summary


@reports_build_errors
def main(argv=None) -> None:
    parser = builder_argument_parser("chexpert_8x200", __doc__, "drop (and count) rows whose image file is missing")
    parser.add_argument("--convirt-dir", required=True, help="folder with image-retrieval/ and text-retrieval/ from ConVIRT")
    parser.add_argument("--chexpert-root", required=True, help="folder that contains CheXpert-v1.0-small/")
    args = parser.parse_args(argv)
    built = build_chexpert_8x200(args.convirt_dir, args.chexpert_root, args.check_files)
    save_and_report(built, args.output_dir, "CheXpert 8x200", __doc__)


__all__ = ["CLASS_NAMES", "build_chexpert_8x200", "main"]

if __name__ == "__main__":
    main()
