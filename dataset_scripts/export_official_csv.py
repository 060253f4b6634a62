"""Export a built pre-training set to the official ALTA code's `train.csv` layout (for comparing runs).

    python -m alta_hf.dataset_scripts.export_official_csv --dataset DIR --output train.csv [--split train] [--absolute]

Columns: `image_path, auxview_image_path, last_image_path, last_auxview_image_path, report` (current
frontal, current lateral, prior frontal, prior lateral, report text); a missing view is the string
`-1`. The official loader opens paths as given: by default they stay relative to the dataset's
`image_root` (run the official code from there), `--absolute` joins them onto it.

Pitfall of the official loader: pandas reads a column whose every value is `-1` as integers, the
`!= "-1"` test then never holds and loading crashes. The file is written with every value as a
string, but such a column still cannot be read by the official code; the exporter warns about it.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import warnings
from pathlib import Path

import datasets

from alta_hf.processing import STUDY_VIEWS

from .common import DatasetBuildError, load_dataset_meta, reports_build_errors

OFFICIAL_COLUMNS = ("image_path", "auxview_image_path", "last_image_path", "last_auxview_image_path", "report")
SOURCE_COLUMNS = tuple(f"{view}_path" for view in STUDY_VIEWS)  # in the order of OFFICIAL_COLUMNS' views
MISSING_VIEW = "-1"


def export_official_csv(
    dataset_dir: os.PathLike | str,
    output: os.PathLike | str,
    split: str = "train",
    absolute: bool = False,
    image_root: os.PathLike | str | None = None,
) -> dict:
    """Write `output` from split `split` of a pre-training dataset folder; returns counts (rows, views present)."""
    meta = load_dataset_meta(dataset_dir)
    if meta.get("kind") != "pretraining":
        raise DatasetBuildError(f"{dataset_dir}: kind {meta.get('kind')!r} is not a pre-training set")
    dataset = datasets.load_from_disk(str(dataset_dir))
    if split not in dataset:
        raise DatasetBuildError(f"{dataset_dir}: no split {split!r} (has {', '.join(dataset)})")
    table = dataset[split].select_columns([*SOURCE_COLUMNS, "report"]).to_dict()
    root = Path(image_root if image_root is not None else meta["image_root"])

    def view(path: str | None) -> str:
        if path is None:
            return MISSING_VIEW
        return str(root / path) if absolute else path

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    present = dict.fromkeys(OFFICIAL_COLUMNS[:4], 0)
    with tempfile.NamedTemporaryFile("w", newline="", encoding="utf-8", dir=output.parent, delete=False, suffix=".tmp") as handle:
        writer = csv.writer(handle)
        writer.writerow(OFFICIAL_COLUMNS)
        for values in zip(*(table[c] for c in SOURCE_COLUMNS), table["report"]):
            row = [view(p) for p in values[:4]] + [values[4]]
            for column, value in zip(OFFICIAL_COLUMNS[:4], row):
                present[column] += value != MISSING_VIEW
            writer.writerow(row)
    os.replace(handle.name, output)
    rows = len(table["report"])
    empty = [column for column, count in present.items() if rows and count == 0]
    if empty:
        warnings.warn(
            f"{output}: column(s) {', '.join(empty)} hold only {MISSING_VIEW!r}; the official loader's pandas reads "
            "them as integers and fails on them", stacklevel=2,
        )
    return {"rows": rows, "views_present": present, "all_missing_columns": empty}


@reports_build_errors
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alta_hf.dataset_scripts.export_official_csv", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="a folder written by dataset_scripts.mimic_cxr")
    parser.add_argument("--output", required=True, help="the CSV to write (e.g. MIMIC-CXR_dataset/train.csv)")
    parser.add_argument("--split", default="train", help="which split to export (default: train)")
    parser.add_argument("--absolute", action="store_true", help="write absolute paths (image_root joined)")
    parser.add_argument("--image-root", help="override the image_root recorded in alta_dataset.json")
    args = parser.parse_args(argv)
    counts = export_official_csv(args.dataset, args.output, args.split, args.absolute, args.image_root)
    print(f"wrote {counts['rows']:,} rows to {args.output}; views present: {counts['views_present']}")


__all__ = ["OFFICIAL_COLUMNS", "export_official_csv", "main"]

if __name__ == "__main__":
    main()
