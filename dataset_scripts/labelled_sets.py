"""What the labelled-set builders (CheXpert, NIH ChestX-ray14, RSNA with a training split) share: the features, the
seeded patient-level hold-out, the metadata and the summary of a fine-tuning set.

A labelled set is a dataset folder (`save_dataset`) of kind `"classification"` with splits `train`, `validation` and
`test`. Multi-label sets have `image_path` and `labels` (one 0/1 float per class, in `class_names` order);
single-label sets have `image_path` and `label` (a `ClassLabel`). `alta_dataset.json` carries `class_names` and
`problem_type` (`"multi_label_classification"` or `"single_label_classification"`); `python -m alta_hf.training.finetune`
reads exactly this.
"""

from __future__ import annotations

import datasets
import numpy as np
import pandas as pd

from .common import content_fingerprint, frame_to_dataset

__all__ = [
    "MULTI_LABEL",
    "SINGLE_LABEL",
    "classification_meta",
    "classification_summary",
    "hold_out_patients",
    "labelled_dataset",
]

MULTI_LABEL = "multi_label_classification"
SINGLE_LABEL = "single_label_classification"


def _features(class_names, problem_type: str) -> datasets.Features:
    if problem_type == MULTI_LABEL:
        labels = datasets.Sequence(datasets.Value("float32"), length=len(class_names))
        return datasets.Features({"image_path": datasets.Value("string"), "labels": labels})
    return datasets.Features({"image_path": datasets.Value("string"), "label": datasets.ClassLabel(names=list(class_names))})


def labelled_dataset(frames: dict[str, pd.DataFrame], class_names, problem_type: str, fingerprint: str) -> datasets.DatasetDict:
    """`DatasetDict` of frames holding `image_path` and either `labels` (arrays) or `label` (class ids)."""
    features = _features(class_names, problem_type)
    return datasets.DatasetDict({
        split: frame_to_dataset(frame, features, split, content_fingerprint(fingerprint, split))
        for split, frame in frames.items()
    })


def hold_out_patients(patients: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the rows whose patient falls in a seeded `fraction` of the distinct patients (no patient is
    on both sides of the split; the same patients for the same seed, whatever the row order)."""
    if not 0 < fraction < 1:
        raise ValueError(f"the validation fraction must be in (0, 1), got {fraction}")
    unique = np.array(sorted(patients.astype(str).unique()))
    chosen = np.random.default_rng(seed).permutation(len(unique))[: max(1, round(fraction * len(unique)))]
    return patients.astype(str).isin(set(unique[chosen])).to_numpy()


def classification_meta(kind: str, image_root, class_names, problem_type: str, **extra) -> dict:
    """`extra` may name the rows' `data_terms` (`dataset_card.DATA_TERMS`); without it the card calls them restricted."""
    return {"kind": "classification", "source_kind": kind, "image_root": str(image_root), "class_names": list(class_names),
            "problem_type": problem_type, **extra}


def classification_summary(builder: str, frames: dict[str, pd.DataFrame], class_names, skipped: dict, **extra) -> dict:
    """Rows and positives per class of every split."""
    def positives(frame):
        if "labels" in frame:
            counts = np.stack(frame["labels"].to_list()).sum(axis=0) if len(frame) else np.zeros(len(class_names))
        else:
            counts = np.bincount(frame["label"].to_numpy(dtype=int), minlength=len(class_names))
        return dict(zip(class_names, (int(c) for c in counts)))

    return {
        "builder": builder,
        "rows": {split: len(frame) for split, frame in frames.items()},
        "positives": {split: positives(frame) for split, frame in frames.items()},
        "skipped": skipped,
        **extra,
    }
