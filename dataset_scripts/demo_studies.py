"""The studies of the demo corpus: what each one shows (`sample_study`), its images (`render_study`)
and its files and report (`generate_study`, the unit of work of the builder's worker processes).

Every study is drawn from its own random streams, `SeedSequence([seed, stream, index])`, so a study is
a pure function of (options, split, index): independent of the global RNG state, of the other
studies and of the number of worker processes. The evaluation splits use streams that the
pre-training splits never use. This module does not import `datasets`, which keeps worker start-up short.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

from .demo_phantom import CLASS_NAMES, DEVICE_NAMES, Finding, render_frontal, render_lateral, sample_anatomy
from .demo_reports import LOBE_NAMES, write_report

__all__ = [
    "EVAL_COLUMNS",
    "EVAL_SPLITS",
    "PRETRAIN_COLUMNS",
    "PRETRAIN_SPLITS",
    "STREAMS",
    "GENERATOR_VERSION",
    "DemoOptions",
    "StudySpec",
    "generate_study",
    "render_study",
    "sample_study",
]

PRETRAIN_COLUMNS = ("subject_id", "study_id", "frontal_path", "lateral_path", "prior_study_id",
                    "prior_frontal_path", "prior_lateral_path", "report")
EVAL_COLUMNS = ("image_path", "label", "report")
# one random stream per split; the evaluation streams are never used for pre-training studies
STREAMS = {"train": 0, "validate": 1, "validation": 2, "test": 3}
PRETRAIN_SPLITS = ("train", "validate")
EVAL_SPLITS = ("validation", "test")
GENERATOR_VERSION = 2
_MAX_STUDIES_PER_SPLIT = 1_000_000  # keeps the MIMIC-like 8-digit ids unique across splits

# how often each support device appears, independently of the class
_DEVICE_RATES = {"ecg_leads": 0.25, "central_line": 0.12, "endotracheal_tube": 0.08, "enteric_tube": 0.08}


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    """What to generate. The defaults give about 4,400 images of 256x256 (about 190 MB)."""

    num_train_studies: int = 1500
    num_validate_studies: int = 100
    num_eval_per_class: int = 60
    image_size: int = 256
    seed: int = 0
    lateral_fraction: float = 0.7
    prior_fraction: float = 0.4
    vocab_size: int = 1000
    # The acquisition nuisance of real radiographs (patient pose, exposure, noise level, collimation, text markers,
    # support devices). Off by default: on the demo's few thousand images it only slows learning down.
    nuisance: bool = False
    min_severity: float = 0.25  # positive findings draw their severity from [min_severity, 1]

    def __post_init__(self):
        counts = {"num_train_studies": self.num_train_studies, "num_validate_studies": self.num_validate_studies,
                  "num_eval_per_class": self.num_eval_per_class * len(CLASS_NAMES)}
        for name, value in counts.items():
            if not 0 < value <= _MAX_STUDIES_PER_SPLIT:
                raise ValueError(f"{name}={value}: each split needs between 1 and {_MAX_STUDIES_PER_SPLIT} studies")
        if self.image_size < 32:
            raise ValueError(f"image_size={self.image_size} is too small for a radiograph; use >= 32")
        if not 0.0 < self.min_severity <= 1.0:
            raise ValueError(f"min_severity={self.min_severity} is not in (0, 1]")
        for name in ("lateral_fraction", "prior_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} is not a fraction in [0, 1]")

    def num_studies(self, split: str) -> int:
        if split == "train":
            return self.num_train_studies
        if split == "validate":
            return self.num_validate_studies
        return self.num_eval_per_class * len(CLASS_NAMES)


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """Everything drawn for one study before rendering: the generator's ground truth."""

    split: str
    index: int
    subject_id: int
    study_id: int
    finding: Finding
    devices: tuple[str, ...]
    has_lateral: bool
    prior_study_id: int | None
    prior_finding: Finding | None
    prior_devices: tuple[str, ...]
    prior_has_lateral: bool

    def record(self) -> dict:
        def finding_dict(finding):
            return None if finding is None else {
                "label": finding.label, "severity": round(finding.severity, 6), "side": finding.side, "lobe": finding.lobe}

        return {"split": self.split, "subject_id": self.subject_id, "study_id": self.study_id,
                "finding": finding_dict(self.finding), "devices": list(self.devices), "has_lateral": self.has_lateral,
                "prior_study_id": self.prior_study_id, "prior_finding": finding_dict(self.prior_finding),
                "prior_devices": list(self.prior_devices), "prior_has_lateral": self.prior_has_lateral}


def _sample_finding(label: str, rng: np.random.Generator, min_severity: float) -> Finding:
    if label == "No Finding":
        return Finding()
    severity = float(rng.uniform(min_severity, 1.0))
    if label == "Cardiomegaly":
        return Finding(label, severity)
    if label == "Pleural Effusion":
        return Finding(label, severity, str(rng.choice(["right", "left", "bilateral"], p=[0.4, 0.35, 0.25])))
    side = "right" if rng.uniform() < 0.55 else "left"
    if label == "Pneumonia":
        lobes = [lobe for (lobe_side, lobe) in LOBE_NAMES if lobe_side == side]
        weights = np.array([1.0 if lobe != "lower" else 2.0 for lobe in lobes])
        return Finding(label, severity, side, str(rng.choice(lobes, p=weights / weights.sum())))
    return Finding(label, severity, side)


def _sample_devices(rng: np.random.Generator, nuisance: bool) -> tuple[str, ...]:
    rolls = rng.uniform(size=len(DEVICE_NAMES))
    return tuple(name for name, roll in zip(DEVICE_NAMES, rolls) if nuisance and roll < _DEVICE_RATES[name])


def _study_streams(seed: int, split: str, index: int) -> list[np.random.Generator]:
    """Independent streams for the study draw, four images and the report, so that e.g. a change in the
    report grammar leaves the images of a seed unchanged."""
    children = np.random.SeedSequence([seed, STREAMS[split], index]).spawn(6)
    return [np.random.default_rng(child) for child in children]


def sample_study(options: DemoOptions, split: str, index: int) -> StudySpec:
    """The ground truth of study `index` of `split` (deterministic in the seed, split and index)."""
    rng = _study_streams(options.seed, split, index)[0]
    stream = STREAMS[split]
    subject_id = 10_000_000 + stream * _MAX_STUDIES_PER_SPLIT + index
    study_id = 50_000_000 + stream * 2 * _MAX_STUDIES_PER_SPLIT + 2 * index + 1
    if split in EVAL_SPLITS:  # class blocks, as in CheXpert 5x200: one frontal, no lateral, no prior
        label = CLASS_NAMES[index // options.num_eval_per_class]
        return StudySpec(split, index, subject_id, study_id, _sample_finding(label, rng, options.min_severity),
                         _sample_devices(rng, options.nuisance),
                         False, None, None, (), False)
    label = CLASS_NAMES[int(rng.integers(len(CLASS_NAMES)))]
    finding = _sample_finding(label, rng, options.min_severity)
    devices = _sample_devices(rng, options.nuisance)
    has_lateral = bool(rng.uniform() < options.lateral_fraction)
    if rng.uniform() >= options.prior_fraction:
        return StudySpec(split, index, subject_id, study_id, finding, devices, has_lateral, None, None, (), False)
    # the prior shows the finding absent (half of the priors) or smaller
    factor = 0.0 if rng.uniform() < 0.5 else float(rng.uniform(0.25, 0.7))
    return StudySpec(split, index, subject_id, study_id, finding, devices, has_lateral, study_id - 1,
                     finding.scaled(factor), _sample_devices(rng, options.nuisance),
                     bool(rng.uniform() < options.lateral_fraction))


def render_study(options: DemoOptions, split: str, index: int) -> tuple[StudySpec, dict[str, np.ndarray]]:
    """The ground truth of study `index` of `split` and its images (`frontal`, and where the study has
    them `lateral`, `prior_frontal`, `prior_lateral`) as `[size, size]` uint8 arrays."""
    spec = sample_study(options, split, index)
    _, frontal_rng, lateral_rng, prior_frontal_rng, prior_lateral_rng, _ = _study_streams(options.seed, split, index)
    anatomy = sample_anatomy(frontal_rng)
    size = options.image_size
    images = {"frontal": render_frontal(anatomy, spec.finding, frontal_rng, size, spec.devices, options.nuisance)}
    if spec.has_lateral:
        images["lateral"] = render_lateral(anatomy, spec.finding, lateral_rng, size, options.nuisance)
    if spec.prior_finding is not None:
        images["prior_frontal"] = render_frontal(anatomy, spec.prior_finding, prior_frontal_rng, size, spec.prior_devices,
                                                 options.nuisance)
        if spec.prior_has_lateral:
            images["prior_lateral"] = render_lateral(anatomy, spec.prior_finding, prior_lateral_rng, size,
                                                     options.nuisance)
    return spec, images


def generate_study(task: tuple[DemoOptions, str, int, str]) -> tuple[dict, dict]:
    """Renders and writes one study's images; returns its dataset row and its ground-truth record."""
    options, split, index, root = task
    spec, images = render_study(options, split, index)
    paths: dict[str, str | None] = {key: None for key in ("frontal", "lateral", "prior_frontal", "prior_lateral")}
    for key, array in images.items():
        study_id = spec.prior_study_id if key.startswith("prior_") else spec.study_id
        paths[key] = f"images/{split}/p{spec.subject_id}_s{study_id}_{key.removeprefix('prior_')}.png"
        # compress_level 1: three times faster than the default for 10% larger files
        Image.fromarray(array, mode="L").save(Path(root) / paths[key], format="PNG", compress_level=1)
    report = write_report(spec.finding, _study_streams(options.seed, split, index)[5], spec.devices, spec.prior_finding)
    if split in EVAL_SPLITS:
        row = {"image_path": paths["frontal"], "label": CLASS_NAMES.index(spec.finding.label), "report": report}
    else:
        row = {"subject_id": spec.subject_id, "study_id": spec.study_id, "frontal_path": paths["frontal"],
               "lateral_path": paths["lateral"], "prior_study_id": spec.prior_study_id,
               "prior_frontal_path": paths["prior_frontal"], "prior_lateral_path": paths["prior_lateral"],
               "report": report}
    return row, {**spec.record(), "report": report}
