"""The demo's labelled set, for fine-tuning and linear probing the demo model (docs/downstream.md).

    python -m alta_hf.dataset_scripts.demo_classification --demo-dir demo_data --output-dir demo_data/classification

`train` is the frontal image of every pre-training study of the demo's `train` split, labelled with its generated
class (`studies.jsonl`; pre-training saw the images and reports, never the labels); `validation` and `test` are the
demo's evaluation splits. Single-label, the five demo classes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import datasets
import pandas as pd

from .common import DatasetBuildError, load_dataset_meta, save_and_report
from .demo_phantom import CLASS_NAMES
from .labelled_sets import SINGLE_LABEL, classification_meta, classification_summary, labelled_dataset

__all__ = ["build_demo_classification", "main"]

BUILDER_VERSION = "1.0.0"


def _study_labels(path: Path) -> dict[int, int]:
    if not path.is_file():
        raise DatasetBuildError(f"{path}: the demo's ground truth is missing (generate with python -m alta_hf.dataset_scripts.demo)")
    labels = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["split"] == "train":
            labels[record["study_id"]] = CLASS_NAMES.index(record["finding"]["label"])
    return labels


def build_demo_classification(demo_dir):
    """Returns `(DatasetDict(train, validation, test), meta, summary)` for `save_dataset`."""
    demo_dir = Path(demo_dir)
    labels = _study_labels(demo_dir / "studies.jsonl")
    pretrain = datasets.load_from_disk(str(demo_dir / "pretrain"))["train"]
    evaluation = datasets.load_from_disk(str(demo_dir / "eval"))
    train = pd.DataFrame({"image_path": pretrain["frontal_path"], "label": [labels[s] for s in pretrain["study_id"]]})
    frames = {"train": train, **{s: evaluation[s].select_columns(["image_path", "label"]).to_pandas()
                                 for s in ("validation", "test")}}
    dataset = labelled_dataset(frames, CLASS_NAMES, SINGLE_LABEL, f"demo_classification {BUILDER_VERSION}")
    image_root = load_dataset_meta(demo_dir / "eval")["image_root"]
    meta = classification_meta("demo", image_root, CLASS_NAMES, SINGLE_LABEL, data_terms="synthetic",
                               builder_version=BUILDER_VERSION)
    return dataset, meta, classification_summary("demo_classification", frames, list(CLASS_NAMES), {})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alta_hf.dataset_scripts.demo_classification", description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-dir", default="demo_data", help="output of python -m alta_hf.dataset_scripts.demo")
    parser.add_argument("--output-dir", required=True)
    args = parser.parse_args(argv)
    save_and_report(build_demo_classification(args.demo_dir), args.output_dir, "demo classification", __doc__)


if __name__ == "__main__":
    main()
