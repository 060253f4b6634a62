"""MIMIC-CXR-JPG pre-training set: one row per study with current/prior frontal and lateral views and the report.

    python -m alta_hf.dataset_scripts.mimic_cxr --root MIMIC_CXR_JPG --reports mimic-cxr-reports.zip --output-dir OUT
        [--report-sections findings_impression|full] [--check-files]

Writes a `DatasetDict` (`train`, `validate`, `test`) with the columns of `PRETRAINING_FEATURES`,
`alta_dataset.json` (`kind: "pretraining"`, `image_root` = the MIMIC-CXR-JPG root) and
`build_summary.json`. Selection rules: `mimic_tables`; report text rules: `report_sections`.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from alta_hf.processing import STUDY_VIEWS

from . import mimic_tables
from .common import builder_argument_parser, content_fingerprint, frame_to_dataset, reports_build_errors, save_and_report
from .mimic_reports import MimicReports, extract_report_texts
from .mimic_tables import SPLITS, assign_priors, load_images, select_study_views
from .report_sections import REPORT_SECTION_MODES, report_text

BUILDER_VERSION = "1.0.0"

_ID, _TEXT = datasets.Value("int64"), datasets.Value("string")
# the view paths in the model's slot order (processing.STUDY_VIEWS), the prior study's id before its two views
PRETRAINING_FEATURES = datasets.Features({
    "subject_id": _ID,
    "study_id": _ID,
    **{f"{view}_path": _TEXT for view in STUDY_VIEWS[:2]},
    "prior_study_id": _ID,
    **{f"{view}_path": _TEXT for view in STUDY_VIEWS[2:]},
    "report": _TEXT,
})


def build_mimic_cxr(
    root: os.PathLike | str,
    reports: os.PathLike | str,
    report_sections: str = "findings_impression",
    check_files: bool = False,
) -> tuple[datasets.DatasetDict, dict, dict]:
    """Build the MIMIC-CXR pre-training `DatasetDict`; returns `(dataset_dict, meta, summary)` for `save_dataset`."""
    if report_sections not in REPORT_SECTION_MODES:
        raise ValueError(f"report_sections must be one of {REPORT_SECTION_MODES}, got {report_sections!r}")
    images, input_counts = load_images(root, check_files=check_files)
    studies, inconsistent = select_study_views(images)
    input_counts["studies"] = len(studies)
    input_counts["subjects"] = int(studies["subject_id"].nunique())
    input_counts["studies_with_inconsistent_images"] = inconsistent
    skipped = {"no_frontal_image": int(studies["frontal_path"].isna().sum())}
    if check_files:
        # studies that do have a frontal row in the metadata, but none of whose frontal JPGs exist
        frontal_in_metadata = set(images.loc[images["frontal_rank"].notna(), "study_id"])
        skipped["frontal_image_missing"] = int((studies["frontal_path"].isna() & studies["study_id"].isin(frontal_in_metadata)).sum())
        skipped["no_frontal_image"] -= skipped["frontal_image_missing"]

    studies = assign_priors(studies)
    studies = studies[studies["frontal_path"].notna()].reset_index(drop=True)
    with MimicReports(reports) as source:
        texts, report_counts = extract_report_texts(
            source,
            zip(studies["subject_id"].tolist(), studies["study_id"].tolist()),
            partial(report_text, mode=report_sections),
            total=len(studies),
        )
    studies["report"] = pd.Series(texts, index=studies.index, dtype=object)
    skipped["missing_report_file"] = report_counts.pop("missing_report_file", 0)
    skipped["unreadable_report_file"] = report_counts.pop("unreadable_report_file", 0)
    skipped["no_report_text"] = report_counts.pop("source:none", 0)
    input_counts["non_utf8_reports"] = report_counts.pop("non_utf8_reports", 0)
    views = input_counts.pop("views")
    studies = studies[np.array([bool(text) for text in texts], dtype=bool)].reset_index(drop=True)
    studies["lateral_path"] = studies["lateral_path"].astype(object).where(studies["lateral_path"].notna(), None)

    options = {"report_sections": report_sections, "check_files": check_files}
    fingerprint = content_fingerprint("mimic_cxr", BUILDER_VERSION, options)
    dataset = datasets.DatasetDict({
        split: frame_to_dataset(studies[studies["split"] == split], PRETRAINING_FEATURES, split, fingerprint)
        for split in SPLITS
    })
    summary = {
        "builder": "mimic_cxr",
        "rows": {split: dataset[split].num_rows for split in SPLITS},
        "skipped": skipped,
        "inputs": input_counts,
        "views": views,
        "written": {
            "with_lateral": int(studies["lateral_path"].notna().sum()),
            "with_prior": int(studies["prior_study_id"].notna().sum()),
            "with_prior_lateral": int(studies["prior_lateral_path"].notna().sum()),
        },
        "report_text_source": {k.split(":", 1)[1]: v for k, v in sorted(report_counts.items())},
    }
    meta = {
        "kind": "pretraining",
        "image_root": str(Path(root).absolute()),
        "builder": "mimic_cxr",
        "builder_version": BUILDER_VERSION,
        "splits": list(SPLITS),
        "columns": list(PRETRAINING_FEATURES),
        "report_sections": report_sections,
        "reports": str(Path(reports).absolute()),
    }
    return dataset, meta, summary


@reports_build_errors
def main(argv=None) -> None:
    parser = builder_argument_parser("mimic_cxr", __doc__, "verify that every image JPG exists (slow on network mounts)")
    parser.add_argument("--root", required=True, help="MIMIC-CXR-JPG root (metadata and split CSVs, files/)")
    parser.add_argument("--reports", required=True, help="mimic-cxr-reports.zip, or the folder it was extracted to")
    parser.add_argument("--report-sections", choices=REPORT_SECTION_MODES, default="findings_impression",
                        help="findings_impression (default): FINDINGS then IMPRESSION, else the last paragraph; "
                             "full: the whole report on one line")
    args = parser.parse_args(argv)
    built = build_mimic_cxr(args.root, args.reports, args.report_sections, args.check_files)
    save_and_report(built, args.output_dir, "MIMIC-CXR pre-training set", f"{__doc__}\n{mimic_tables.__doc__}")


__all__ = ["PRETRAINING_FEATURES", "build_mimic_cxr", "main"]

if __name__ == "__main__":
    main()
