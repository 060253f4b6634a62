"""MIMIC 5x200 (zero-shot classification and image-text retrieval) from the user's MIMIC-CXR-JPG copy.

    python -m alta_hf.dataset_scripts.mimic_5x200 --root MIMIC_CXR_JPG --reports mimic-cxr-reports.zip --output-dir OUT
        [--splits test] [--per-class 200] [--seed 0] [--check-files]

Selection rule (deterministic for a given seed):
1. studies of the chosen official splits (default `test`) with a row in `mimic-cxr-2.0.0-chexpert.csv`
   in which exactly one of Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion is
   positive (1.0) and none of the five is uncertain (-1.0); the other nine labels are not looked at;
2. the study has a frontal image (PA before AP, then the smallest dicom_id) and a non-empty
   IMPRESSION section (the last one, whitespace normalised, via `report_sections`);
3. each class pool is sorted by (subject_id, study_id); one `numpy.random.default_rng(seed)` draws
   `per_class` studies from each pool in class order (a permutation, first `per_class` taken); the
   drawn studies keep their pool order.
A pool smaller than `per_class` is an error (add `--splits validate` or lower `--per-class`).
Output: split `test` with `image_path`, `label` (ClassLabel of the five classes, 5 blocks in class
order) and `report` (the impression); `alta_dataset.json` carries `class_names`, `class_prompts`
(the CheXpert 5x200 prompt table) and the selection parameters.
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from .class_prompts import CHEXPERT_COMPETITION_CLASSES, chexpert_class_prompts
from .common import (
    builder_argument_parser,
    DatasetBuildError,
    content_fingerprint,
    find_table,
    frame_to_dataset,
    parse_int_column,
    read_csv_columns,
    save_and_report,
    reports_build_errors,
)
from .mimic_reports import MimicReports, extract_report_texts
from .mimic_tables import CHEXPERT_STEM, SPLITS, load_images, select_study_views
from .report_sections import impression_text

BUILDER_VERSION = "1.0.0"
CLASS_NAMES = list(CHEXPERT_COMPETITION_CLASSES)
FEATURES = datasets.Features({
    "image_path": datasets.Value("string"),
    "label": datasets.ClassLabel(names=CLASS_NAMES),
    "report": datasets.Value("string"),
})


def _impression(text: str) -> tuple[str, str]:
    impression = impression_text(text)
    return impression, ("impression" if impression else "none")


def single_class_studies(root: Path) -> tuple[pd.DataFrame, dict]:
    """`(frame[subject_id, study_id, label], counts)`: studies whose five competition labels have exactly one 1.0 and no -1.0."""
    frame, bad_lines = read_csv_columns(find_table(root, CHEXPERT_STEM), ["subject_id", "study_id", *CLASS_NAMES], engine="pyarrow")
    values = frame[CLASS_NAMES].apply(pd.to_numeric, errors="coerce").to_numpy()
    ids = pd.DataFrame({"subject_id": parse_int_column(frame["subject_id"]), "study_id": parse_int_column(frame["study_id"])})
    valid_ids = ids.notna().all(axis=1).to_numpy()
    eligible = valid_ids & ((values == 1).sum(axis=1) == 1) & ~(values == -1).any(axis=1)
    counts = {"chexpert_rows": len(frame) + bad_lines, "chexpert_malformed_rows": bad_lines + int((~valid_ids).sum()),
              "single_positive_studies": int(eligible.sum())}
    chosen = ids[eligible].astype("int64").assign(label=(values == 1).argmax(axis=1)[eligible])
    return chosen.drop_duplicates("study_id"), counts


def build_mimic_5x200(
    root: os.PathLike | str,
    reports: os.PathLike | str,
    splits: tuple[str, ...] = ("test",),
    per_class: int = 200,
    seed: int = 0,
    check_files: bool = False,
) -> tuple[datasets.DatasetDict, dict, dict]:
    """Returns `(DatasetDict(test=...), meta, summary)` for `save_dataset`; rules in the module docstring."""
    unknown = set(splits) - set(SPLITS)
    if unknown or not splits:
        raise ValueError(f"splits must be a non-empty subset of {SPLITS}, got {splits}")
    if per_class < 1:
        raise ValueError(f"per_class must be positive, got {per_class}")
    root = Path(root)
    images, counts = load_images(root, check_files=check_files)
    studies, _ = select_study_views(images)
    labelled, label_counts = single_class_studies(root)
    counts.update(label_counts)
    pool = studies[studies["split"].isin(splits)].merge(labelled, on=["subject_id", "study_id"], how="inner")
    counts["single_positive_studies_in_splits"] = len(pool)
    pool = pool[pool["frontal_path"].notna()]
    counts["with_frontal_image"] = len(pool)
    pool = pool.sort_values(["subject_id", "study_id"]).reset_index(drop=True)
    with MimicReports(reports) as source:
        texts, report_counts = extract_report_texts(
            source, zip(pool["subject_id"].tolist(), pool["study_id"].tolist()), _impression, total=len(pool)
        )
    pool["report"] = [text or "" for text in texts]
    counts["missing_report_file"] = report_counts["missing_report_file"] + report_counts["unreadable_report_file"]
    counts["non_utf8_reports"] = report_counts["non_utf8_reports"]
    pool = pool[pool["report"] != ""]
    counts["with_impression"] = len(pool)

    rng = np.random.default_rng(seed)
    blocks = []
    pool_sizes = {}
    for label, name in enumerate(CLASS_NAMES):
        members = pool[pool["label"] == label]
        pool_sizes[name] = len(members)
        if len(members) < per_class:
            raise DatasetBuildError(
                f"{root}: only {len(members)} eligible {name} studies in split(s) {', '.join(splits)} "
                f"(need {per_class}); add --splits validate or lower --per-class"
            )
        drawn = np.sort(rng.permutation(len(members))[:per_class])
        blocks.append(members.iloc[drawn])
    selected = pd.concat(blocks, ignore_index=True).rename(columns={"frontal_path": "image_path"})

    options = {"splits": list(splits), "per_class": per_class, "seed": seed}
    fingerprint = content_fingerprint("mimic_5x200", BUILDER_VERSION, options)
    dataset = datasets.DatasetDict({"test": frame_to_dataset(selected, FEATURES, "test", fingerprint)})
    summary = {"builder": "mimic_5x200", "rows": {"test": len(selected)}, "pool_per_class": pool_sizes, "inputs": counts}
    meta = {
        "kind": "mimic_5x200",
        "image_root": str(root.absolute()),
        "class_names": CLASS_NAMES,
        "class_prompts": chexpert_class_prompts(),
        "selection": options,
        "reports": str(Path(reports).absolute()),
        "builder_version": BUILDER_VERSION,
    }
    return dataset, meta, summary


@reports_build_errors
def main(argv=None) -> None:
    parser = builder_argument_parser("mimic_5x200", __doc__, "ignore images whose JPG is missing")
    parser.add_argument("--root", required=True, help="MIMIC-CXR-JPG root (metadata, split and chexpert CSVs)")
    parser.add_argument("--reports", required=True, help="mimic-cxr-reports.zip, or the folder it was extracted to")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=["test"], help="official splits to draw from (default: test)")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    built = build_mimic_5x200(args.root, args.reports, tuple(args.splits), args.per_class, args.seed, args.check_files)
    save_and_report(built, args.output_dir, "MIMIC 5x200", __doc__)


__all__ = ["CLASS_NAMES", "FEATURES", "build_mimic_5x200", "main", "single_class_studies"]

if __name__ == "__main__":
    main()
