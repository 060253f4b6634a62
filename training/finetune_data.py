"""Data side of `training.finetune`: the labelled set (dataset_scripts/labelled_sets.py), the seeded class-stratified
label fraction, the image collator (unreadable images skipped and counted) and the validation AUROC."""

import logging
from pathlib import Path

import datasets
import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from alta_hf.dataset_scripts.common import DatasetBuildError, load_dataset_meta
from alta_hf.dataset_scripts.labelled_sets import MULTI_LABEL, SINGLE_LABEL

__all__ = ["ImageLabelCollator", "LabelledSet", "auroc_metrics", "label_fraction_indices", "load_labelled_set"]

logger = logging.getLogger(__name__)


class LabelledSet:
    """A built labelled set: its splits, image root, class names and problem type."""

    def __init__(self, splits: datasets.DatasetDict, image_root: Path, class_names: list[str], problem_type: str):
        self.splits, self.image_root, self.class_names, self.problem_type = splits, image_root, class_names, problem_type

    @property
    def label_column(self) -> str:
        return "labels" if self.problem_type == MULTI_LABEL else "label"

    def label_matrix(self, split: str) -> np.ndarray:
        """`(rows,)` class ids (single-label) or `(rows, classes)` 0/1 (multi-label)."""
        return np.asarray(self.splits[split][self.label_column])


def load_labelled_set(dataset_dir) -> LabelledSet:
    meta = load_dataset_meta(dataset_dir)
    problem_type = meta.get("problem_type")
    if meta.get("kind") != "classification" or problem_type not in (MULTI_LABEL, SINGLE_LABEL):
        raise DatasetBuildError(
            f"{dataset_dir}: not a labelled set (alta_dataset.json kind {meta.get('kind')!r}, problem_type "
            f"{problem_type!r}); build one with dataset_scripts.chexpert_classification, nih_chestxray14 or rsna_classification"
        )
    splits = datasets.load_from_disk(str(dataset_dir))
    missing = [s for s in ("train", "validation") if s not in splits]
    if missing:
        raise DatasetBuildError(f"{dataset_dir}: the labelled set has no {', '.join(missing)} split")
    return LabelledSet(splits, Path(meta["image_root"]), list(meta["class_names"]), problem_type)


def _largest_remainder(counts: np.ndarray, fraction: float, rng: np.random.Generator, at_least_one: bool) -> np.ndarray:
    quotas = counts * fraction
    take = np.floor(quotas).astype(int)
    if at_least_one:
        take = np.maximum(take, (counts > 0).astype(int))
    left = int(round(fraction * counts.sum())) - int(take.sum())
    if left > 0:  # the groups with the largest remainders get one more; ties in seeded random order
        order = np.lexsort((rng.random(len(counts)), -(quotas - np.floor(quotas))))
        order = [g for g in order if take[g] < counts[g]][:left]
        take[order] += 1
    return take


def label_fraction_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded, class-stratified `fraction` of the rows.

    Single-label (`labels` of shape `(rows,)`): every class keeps its share (largest-remainder rounding, at least one
    row per class). Multi-label (`(rows, classes)`): the strata are the label combinations, so that each class's
    prevalence, and its co-occurrences, are kept. The same `(labels, fraction, seed)` always gives the same rows.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    if fraction == 1:
        return np.arange(len(labels))
    keys = labels if labels.ndim == 1 else np.packbits(labels.astype(bool), axis=1)
    _, strata = np.unique(keys, axis=0, return_inverse=True)
    strata = strata.reshape(-1)
    rng = np.random.default_rng(seed)
    take = _largest_remainder(np.bincount(strata), fraction, rng, at_least_one=labels.ndim == 1)
    chosen = [rng.permutation(np.flatnonzero(strata == s))[:n] for s, n in enumerate(take)]
    return np.sort(np.concatenate(chosen))


class ImageLabelCollator:
    """Rows `{image_path, label(s)}` -> `{pixel_values, labels}`; unreadable images are skipped (logged, counted)."""

    def __init__(self, image_processor, image_root: Path, label_column: str, problem_type: str):
        self.image_processor, self.image_root = image_processor, Path(image_root)
        self.label_column, self.problem_type = label_column, problem_type
        # the folder's DICOM reading rule (docs/processing.md), as the processor itself would apply it
        self.dicom_lut = bool(getattr(image_processor, "dicom_lut", False))
        self.skipped = 0

    def __call__(self, rows: list[dict]) -> dict:
        from alta_hf.processing import RadiographLoadError, load_radiograph

        images, labels = [], []
        for row in rows:
            path = self.image_root / row["image_path"]
            try:
                images.append(load_radiograph(path, dicom_lut=self.dicom_lut))
            except RadiographLoadError as error:
                self.skipped += 1
                logger.warning("skipped unreadable image (%d so far in this process): %s", self.skipped, error)
                continue
            labels.append(row[self.label_column])
        if not images:
            raise RuntimeError(f"none of the {len(rows)} images of a batch could be read, e.g. {rows[0]['image_path']}")
        dtype = torch.float32 if self.problem_type == MULTI_LABEL else torch.long
        pixel_values = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values, "labels": torch.tensor(np.asarray(labels), dtype=dtype)}


def auroc_metrics(logits: np.ndarray, labels: np.ndarray, class_names: list[str], problem_type: str) -> dict:
    """Macro AUROC (`auroc`) and one AUROC per class; a class whose labels are all equal in the split has none."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if problem_type == MULTI_LABEL:
        scores, targets = logits, labels
    else:
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores = shifted / shifted.sum(axis=1, keepdims=True)
        targets = np.eye(len(class_names))[labels.astype(int)]
        if len(class_names) == 2:  # binary: one AUROC, of the positive class
            scores, targets, class_names = scores[:, 1:], targets[:, 1:], class_names[1:]
    per_class = {}
    for index, name in enumerate(class_names):
        if len(np.unique(targets[:, index])) == 2:
            per_class[f"auroc_{name}"] = float(roc_auc_score(targets[:, index], scores[:, index]))
    values = list(per_class.values())
    return {"auroc": float(np.mean(values)) if values else float("nan"), **per_class}
