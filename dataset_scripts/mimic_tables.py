"""MIMIC-CXR-JPG metadata: images, view selection per study and prior studies (vectorised pandas).

Rules (documented for users in `docs/datasets.md`):

* view of an image: `ViewPosition` when it is PA, AP, LATERAL or LL; when it is empty or anything
  else, `ViewCodeSequence_CodeMeaning` decides (postero-anterior = PA, antero-posterior = AP,
  lateral = LATERAL); otherwise the image is "other" and never used;
* frontal of a study: PA before AP, then the smallest dicom_id; lateral: LATERAL before LL, then the
  smallest dicom_id;
* study timestamp: (StudyDate, StudyTime), StudyTime compared as a number (`80556.875` is
  08:05:56.875, earlier than `102000`);
* prior of a study: among the same subject's studies that have a frontal image, the one with the
  greatest timestamp strictly earlier than the study's (the smallest study_id among equal ones);
  studies with equal timestamps are never each other's prior.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .common import DatasetBuildError, files_exist, find_table, parse_int_column, read_csv_columns

METADATA_STEM = "mimic-cxr-2.0.0-metadata"
SPLIT_STEM = "mimic-cxr-2.0.0-split"
CHEXPERT_STEM = "mimic-cxr-2.0.0-chexpert"
SPLITS = ("train", "validate", "test")

METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", "StudyTime")
VIEW_CODE_COLUMN = "ViewCodeSequence_CodeMeaning"
SPLIT_COLUMNS = ("dicom_id", "split")

USED_VIEW_POSITIONS = ("PA", "AP", "LATERAL", "LL")
VIEW_CODE_MEANINGS = {"postero-anterior": "PA", "antero-posterior": "AP", "lateral": "LATERAL"}
FRONTAL_RANK = {"PA": 0, "AP": 1}
LATERAL_RANK = {"LATERAL": 0, "LL": 1}


def image_paths(subject_id: pd.Series, study_id: pd.Series, dicom_id: pd.Series) -> pd.Series:
    """`files/p10/p10000032/s50414267/<dicom_id>.jpg`, relative to the MIMIC-CXR-JPG root."""
    subject = subject_id.astype("int64").astype(str)
    return "files/p" + subject.str[:2] + "/p" + subject + "/s" + study_id.astype("int64").astype(str) + "/" + dicom_id + ".jpg"


def _valid_study_time(time: pd.Series) -> pd.Series:
    """HHMMSS(.fff) read as a number: hours < 24, minutes < 60, seconds < 61 (leap second)."""
    whole = np.floor(time.fillna(-1)).astype("int64")
    return time.notna() & (whole >= 0) & (whole // 10000 < 24) & ((whole // 100) % 100 < 60) & (whole % 100 < 61)


def load_images(root: os.PathLike | str, check_files: bool = False) -> tuple[pd.DataFrame, dict]:
    """One row per usable image of the metadata CSV, joined with its split, with view and path columns.

    Returns `(images, counts)`; `images` has `dicom_id, subject_id, study_id, StudyDate, StudyTime,
    split, view, frontal_rank, lateral_rank, path, file_present`, sorted by dicom_id. Malformed
    metadata rows and images without a split are dropped and counted; `file_present` is False for
    images whose JPG is absent (only checked with `check_files`, else always True).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetBuildError(f"{root}: MIMIC-CXR-JPG root is not a directory")
    metadata_path = find_table(root, METADATA_STEM)
    split_path = find_table(root, SPLIT_STEM)
    meta, bad_meta_lines = read_csv_columns(metadata_path, METADATA_COLUMNS, optional=(VIEW_CODE_COLUMN,), engine="pyarrow")
    counts = {"metadata_rows": len(meta) + bad_meta_lines}

    images = pd.DataFrame({
        "dicom_id": meta["dicom_id"].str.strip(),
        "subject_id": parse_int_column(meta["subject_id"]),
        "study_id": parse_int_column(meta["study_id"]),
        "StudyDate": parse_int_column(meta["StudyDate"]),
        "StudyTime": pd.to_numeric(meta["StudyTime"], errors="coerce"),
    })
    well_formed = (
        # a dicom_id becomes a file name: no separators or `..` that would point outside the image root
        images["dicom_id"].fillna("").str.fullmatch(r"[\w-][\w.-]*")
        & images["subject_id"].notna() & images["study_id"].notna()
        & images["StudyDate"].between(1, 99991231) & _valid_study_time(images["StudyTime"])
    ).to_numpy(dtype=bool)
    counts["malformed_metadata_rows"] = int((~well_formed).sum()) + bad_meta_lines
    images, meta = images[well_formed], meta[well_formed]
    duplicated = images["dicom_id"].duplicated().to_numpy()
    counts["duplicate_dicom_ids"] = int(duplicated.sum())
    images, meta = images[~duplicated], meta[~duplicated]

    position = meta["ViewPosition"].fillna("").str.strip().str.upper()
    view_code = (meta[VIEW_CODE_COLUMN] if VIEW_CODE_COLUMN in meta else pd.Series("", index=meta.index))
    from_code = view_code.fillna("").str.strip().str.lower().map(VIEW_CODE_MEANINGS)
    explicit = position.isin(USED_VIEW_POSITIONS)
    images["view"] = position.where(explicit, from_code)
    counts["views"] = {view: int((images["view"] == view).sum()) for view in USED_VIEW_POSITIONS}
    counts["views"]["other"] = int(images["view"].isna().sum())
    counts["views"]["from_view_code"] = int((~explicit & from_code.notna()).sum())

    splits, bad_split_lines = read_csv_columns(split_path, SPLIT_COLUMNS, engine="pyarrow")
    splits = pd.DataFrame({"dicom_id": splits["dicom_id"].str.strip(), "split": splits["split"].str.strip().str.lower()})
    known = splits["split"].isin(SPLITS)
    counts["unknown_split_rows"] = int((~known).sum()) + bad_split_lines
    splits = splits[known].drop_duplicates("dicom_id")
    images = images.merge(splits, on="dicom_id", how="left")
    without_split = images["split"].isna().to_numpy()
    counts["images_without_split"] = int(without_split.sum())
    images = images[~without_split].reset_index(drop=True)

    # later selections use stable sorts on numeric keys, so ties fall to the smallest dicom_id
    images = images.sort_values("dicom_id", kind="stable").reset_index(drop=True)
    images["frontal_rank"] = images["view"].map(FRONTAL_RANK)
    images["lateral_rank"] = images["view"].map(LATERAL_RANK)
    images["path"] = image_paths(images["subject_id"], images["study_id"], images["dicom_id"])
    images["file_present"] = files_exist(root, images["path"], desc="checking MIMIC-CXR-JPG files") if check_files else True
    if check_files:
        counts["missing_image_files"] = int((~images["file_present"]).sum())
    counts["images_used"] = int(images["file_present"].sum())
    return images, counts


def select_study_views(images: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per study of `images` (as returned by `load_images`, i.e. sorted by dicom_id; views only from present files): `subject_id, study_id, split, StudyDate, StudyTime, frontal_path, lateral_path`.

    `frontal_path`/`lateral_path` are None when the study has no such image. Studies whose images
    disagree on subject, split or timestamp take the values of their earliest image; their number is
    returned as the second value.
    """
    keys = ["subject_id", "split", "StudyDate", "StudyTime"]
    spread = images[keys].assign(split=images["split"].map(SPLITS.index), study_id=images["study_id"]).groupby("study_id")
    inconsistent = int((spread.min() != spread.max()).any(axis=1).sum())
    ordered = images.sort_values(["study_id", "StudyDate", "StudyTime"], kind="stable")
    studies = ordered.drop_duplicates("study_id")[["study_id"] + keys]
    for kind, rank in (("frontal", "frontal_rank"), ("lateral", "lateral_rank")):
        chosen = (
            images[images[rank].notna() & images["file_present"]]
            .sort_values(["study_id", rank], kind="stable")
            .drop_duplicates("study_id")[["study_id", "path"]]
            .rename(columns={"path": f"{kind}_path"})
        )
        studies = studies.merge(chosen, on="study_id", how="left")
    studies = studies.sort_values(["subject_id", "StudyDate", "StudyTime", "study_id"], kind="stable")
    return studies.reset_index(drop=True).astype({"frontal_path": object, "lateral_path": object}), inconsistent


def assign_priors(studies: pd.DataFrame) -> pd.DataFrame:
    """Add `prior_study_id`, `prior_frontal_path`, `prior_lateral_path` (None without a prior) to `studies`."""
    candidates = studies[studies["frontal_path"].notna()].sort_values(
        ["subject_id", "StudyDate", "StudyTime", "study_id"], kind="stable"
    ).reset_index(drop=True)
    subject = candidates["subject_id"].to_numpy()
    date = candidates["StudyDate"].to_numpy()
    time = candidates["StudyTime"].to_numpy()
    starts = np.ones(len(candidates), dtype=bool)
    starts[1:] = (subject[1:] != subject[:-1]) | (date[1:] != date[:-1]) | (time[1:] != time[:-1])
    group = np.cumsum(starts) - 1
    group_first = np.flatnonzero(starts)  # within a group of equal timestamps: the smallest study_id
    previous_first = np.full(len(group_first), -1)
    same_subject = np.zeros(len(group_first), dtype=bool)
    same_subject[1:] = subject[group_first[1:]] == subject[group_first[:-1]]
    previous_first[1:] = group_first[:-1]
    prior_row = np.where(same_subject, previous_first, -1)[group]

    has_prior = prior_row >= 0
    source = candidates.iloc[np.where(has_prior, prior_row, 0)]
    priors = pd.DataFrame({
        "study_id": candidates["study_id"].to_numpy(),
        "prior_study_id": pd.array(np.where(has_prior, source["study_id"].to_numpy(), 0), dtype="Int64"),
        "prior_frontal_path": np.where(has_prior, source["frontal_path"].to_numpy(), None),
        "prior_lateral_path": np.where(has_prior, source["lateral_path"].to_numpy(), None),
    })
    priors.loc[~has_prior, "prior_study_id"] = pd.NA
    priors["prior_lateral_path"] = priors["prior_lateral_path"].where(priors["prior_lateral_path"].notna(), None)
    merged = studies.merge(priors, on="study_id", how="left")
    for column in ("prior_frontal_path", "prior_lateral_path"):
        merged[column] = merged[column].astype(object).where(merged[column].notna(), None)
    return merged


__all__ = [
    "CHEXPERT_STEM",
    "METADATA_STEM",
    "SPLITS",
    "SPLIT_STEM",
    "assign_priors",
    "image_paths",
    "load_images",
    "select_study_views",
]
