"""Training data: pre-training dataset rows -> `AltaProcessor` samples, deterministic per (seed, epoch, index).

Every sample is a pure function of the row and a per-sample seed drawn from (seed, epoch, dataset index), so the data
do not depend on DataLoader workers or on the global RNG, and a resumed run sees exactly the data of an uninterrupted
one. A study whose current frontal image (or report) is unusable is replaced by the next usable study and counted; an
unreadable optional view (lateral, prior) becomes an absent slot and is counted. Per-rank batch sizes therefore never
change, which the contrastive losses (gathered across processes) need.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from alta_hf.processing import PRETRAINING_KEYS, STUDY_VIEWS, AltaPreTrainingCollator, RadiographLoadError

__all__ = [
    "EpochShuffleSampler",
    "StudyDataset",
    "TrainingCollator",
    "build_train_loader",
    "load_pretraining_split",
    "sample_seed",
    "view_sources",
]

logger = logging.getLogger(__name__)
VIEW_COLUMNS = tuple(f"{view}_path" for view in STUDY_VIEWS)
# Embedded-image columns of pre-resized shards (dataset_scripts.shard_images), in slot order.
EMBEDDED_VIEW_COLUMNS = tuple(f"{view}_image" for view in STUDY_VIEWS)
# Counters a sample carries next to the model inputs; the loop pops them before the forward pass.
SAMPLE_COUNTERS = ("skipped_studies", "dropped_views")
_MAX_LOGGED_PROBLEMS = 20


# the stream index of the sampler's shuffle (sample indices are >= 0)
_ORDER_STREAM = 2**32 - 1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample (or stream) of one epoch."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def load_pretraining_split(dataset_dir: str, split: str, image_root: str | None = None):
    """The split's rows and the image root (`image_root` override, else the dataset's `alta_dataset.json`)."""
    dataset_dir = Path(dataset_dir)
    meta_file = dataset_dir / "alta_dataset.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{dataset_dir}: not a dataset folder made by dataset_scripts (no alta_dataset.json)")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{meta_file}: not a UTF-8 JSON file ({error})") from error
    if meta.get("kind") != "pretraining":
        raise ValueError(f"{dataset_dir}: kind {meta.get('kind')!r} is not a pre-training dataset")
    dataset = datasets.load_from_disk(str(dataset_dir))
    if split not in dataset:
        raise KeyError(f"{dataset_dir}: no split {split!r}; it has {sorted(dataset)}")
    rows = dataset[split]
    missing = [column for column in ("report",) + VIEW_COLUMNS[:1] if column not in rows.column_names]
    if missing and "frontal_image" not in rows.column_names:
        raise ValueError(f"{dataset_dir}[{split}]: missing columns {missing}")
    return rows, Path(image_root or meta["image_root"]), meta


def view_sources(row: dict, image_root: Path) -> list:
    """The four view slots of a row: embedded images (shards) or absolute paths; None for absent views."""
    sources = []
    for path_column, image_column in zip(VIEW_COLUMNS, EMBEDDED_VIEW_COLUMNS):
        if row.get(image_column) is not None:
            sources.append(row[image_column])
        elif row.get(path_column):
            sources.append(image_root / row[path_column])
        else:
            sources.append(None)
    return sources


class EpochShuffleSampler(Sampler[int]):
    """A random order of the dataset that depends only on (seed, epoch): every process draws the same order."""

    def __init__(self, num_samples: int, seed: int):
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, _ORDER_STREAM))
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


class StudyDataset(Dataset):
    """`AltaProcessor.preprocess_study` over the rows of a pre-training split."""

    def __init__(self, rows, processor, image_root: Path, seed: int, max_substitutes: int = 16, augment: bool = True):
        self.rows, self.processor, self.image_root = rows, processor, Path(image_root)
        self.seed, self.epoch, self.max_substitutes, self.augment = seed, 0, max_substitutes, augment
        self._logged = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def _log_problem(self, message: str) -> None:
        if self._logged < _MAX_LOGGED_PROBLEMS:
            self._logged += 1
            logger.warning(message + (" (further problems are only counted)" if self._logged == _MAX_LOGGED_PROBLEMS else ""))

    def __getitem__(self, index: int) -> dict:
        skipped = 0
        for attempt in range(self.max_substitutes + 1):
            candidate = (index + attempt) % len(self.rows)
            row = self.rows[candidate]
            report = row.get("report")
            if not isinstance(report, str) or not report.strip():
                self._log_problem(f"row {candidate} (study {row.get('study_id')}): empty report; study skipped")
                skipped += 1
                continue
            dropped = []
            generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, candidate))
            try:
                sample = self.processor.preprocess_study(
                    *view_sources(row, self.image_root), report=report, generator=generator, augment=self.augment,
                    dropped_views=dropped,
                )
            except RadiographLoadError as error:
                self._log_problem(f"row {candidate} (study {row.get('study_id')}): {error}; study skipped")
                skipped += 1
                continue
            for error in dropped:
                self._log_problem(f"row {candidate} (study {row.get('study_id')}): {error}; view left out")
            sample["skipped_studies"] = torch.tensor(skipped)
            sample["dropped_views"] = torch.tensor(len(dropped))
            return sample
        raise RuntimeError(f"{self.max_substitutes + 1} consecutive unusable studies from row {index}: check the data "
                           f"(image_root {self.image_root})")


@dataclass
class TrainingCollator:
    """Stacks samples for the model and sums their problem counters (`skipped_studies`, `dropped_views`)."""

    def __post_init__(self):
        self.stack = AltaPreTrainingCollator(PRETRAINING_KEYS)

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.stack(samples)
        for counter in SAMPLE_COUNTERS:
            batch[counter] = torch.stack([sample[counter] for sample in samples]).sum()
        return batch


def build_train_loader(train_set: StudyDataset, data_args, training_args) -> tuple[EpochShuffleSampler, DataLoader]:
    """The training DataLoader of one process (before `accelerator.prepare`) and its sampler (for `set_epoch`)."""
    sampler = EpochShuffleSampler(len(train_set), training_args.seed)
    loader = DataLoader(
        train_set, batch_size=training_args.per_device_train_batch_size, sampler=sampler, drop_last=True,
        num_workers=data_args.dataloader_num_workers, collate_fn=TrainingCollator(),
        # worker seeds come from this generator, not from the global RNG that dropout and masking use
        generator=torch.Generator().manual_seed(training_args.seed),
    )
    return sampler, loader
