"""Push a built dataset folder to the Hugging Face Hub, images embedded, with its dataset card.

    python -m alta_hf.dataset_scripts.dataset_hub DIR REPO_ID [--config-name NAME] [--private]

The path columns (`image_path`, `frontal_path`, ...) are resolved against the folder's `image_root` and added as
`datasets.Image` columns (`image`, `frontal_image`, ...), so `load_dataset(REPO_ID)` gives pictures; `push_to_hub`
embeds the bytes. Only shareable folders go (`dataset_card.ensure_shareable`): MIMIC-CXR-, CheXpert- and
RSNA-derived folders are refused, as their data-use agreements forbid redistribution.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import datasets
from huggingface_hub import DatasetCard

from .common import load_dataset_meta
from .dataset_card import CARD_FILE, RestrictedDatasetError, ensure_shareable

__all__ = ["IMAGE_COLUMN_OF_PATH", "main", "push_dataset_card", "push_dataset_folder", "with_image_columns"]

IMAGE_COLUMN_OF_PATH = {
    "image_path": "image",
    "frontal_path": "frontal_image",
    "lateral_path": "lateral_image",
    "prior_frontal_path": "prior_frontal_image",
    "prior_lateral_path": "prior_lateral_image",
}


def with_image_columns(dataset: datasets.DatasetDict, image_root: os.PathLike | str) -> datasets.DatasetDict:
    """Every split with an `Image` column next to each path column it has (None where the path is None); columns
    that already exist (image shards) are kept as they are."""
    image_root = Path(image_root)
    result = {}
    for name, split in dataset.items():
        for path_column, image_column in IMAGE_COLUMN_OF_PATH.items():
            if path_column in split.column_names and image_column not in split.column_names:
                files = [str(image_root / path) if path else None for path in split[path_column]]
                split = split.add_column(image_column, files).cast_column(image_column, datasets.Image())
        result[name] = split
    return datasets.DatasetDict(result)


def push_dataset_folder(folder: os.PathLike | str, repo_id: str, *, config_name: str = "default",
                        set_default: bool | None = None, private: bool | None = None, token: str | None = None) -> None:
    """Push the splits of a built folder as configuration `config_name` of the dataset repo `repo_id`."""
    meta = load_dataset_meta(folder)
    ensure_shareable(folder, meta)
    dataset = datasets.load_from_disk(str(folder))
    if isinstance(dataset, datasets.Dataset):
        dataset = datasets.DatasetDict({str(dataset.split or "train"): dataset})
    with_image_columns(dataset, meta["image_root"]).push_to_hub(
        repo_id, config_name=config_name, set_default=set_default, private=private, token=token
    )


def push_dataset_card(repo_id: str, card: DatasetCard, token: str | None = None) -> None:
    """Replace the card `push_to_hub` wrote with `card`, keeping the Hub's `configs` and `dataset_info` (they
    describe the pushed files, image columns included)."""
    pushed = DatasetCard.load(repo_id, repo_type="dataset", token=token).data.to_dict()
    data = card.data.to_dict()
    data.update({key: pushed[key] for key in ("configs", "dataset_info") if key in pushed})
    merged = DatasetCard(f"---\n{type(card.data)(**data).to_yaml()}\n---\n{card.text}")
    merged.push_to_hub(repo_id, repo_type="dataset", token=token, commit_message="Dataset card")


def _fail(parser: argparse.ArgumentParser, error: Exception) -> int:
    print(f"{parser.prog}: error: {error}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alta_hf.dataset_scripts.dataset_hub", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a folder written by one of the dataset_scripts builders")
    parser.add_argument("repo_id", help="dataset repository, e.g. me/alta-demo")
    parser.add_argument("--config-name", default="default")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    try:
        push_dataset_folder(args.folder, args.repo_id, config_name=args.config_name, private=args.private or None)
        push_dataset_card(args.repo_id, DatasetCard.load(Path(args.folder) / CARD_FILE))
    except (RestrictedDatasetError, ValueError, OSError) as error:  # one line naming the folder, no traceback
        return _fail(parser, error)
    print(f"pushed {args.folder} to the dataset repo {args.repo_id} (configuration {args.config_name!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
