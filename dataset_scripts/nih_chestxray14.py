"""NIH ChestX-ray14 fine-tuning set: the 14 findings of `Data_Entry_2017*.csv`, multi-label, on the official split.

    python -m alta_hf.dataset_scripts.nih_chestxray14 --root ROOT --output-dir OUT [--data-entry F] [--train-val-list F]
        [--test-list F] [--validation-fraction 0.1] [--seed 0] [--check-files]

`ROOT` holds the images (flat in `ROOT/images/`, or in the `images_001/images/ ...` folders of the official download,
found by one walk over ROOT), `Data_Entry_2017.csv` (or `Data_Entry_2017_v2020.csv`, plain or gzip),
`train_val_list.txt` and `test_list.txt`. `test` is the official test list; `validation` is a seeded patient-level part
of the official train/val list and `train` the rest. "No Finding" is the all-zero label vector.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .common import DatasetBuildError, builder_argument_parser, read_csv_columns, require_directory, save_and_report
from .labelled_sets import MULTI_LABEL, classification_meta, classification_summary, hold_out_patients, labelled_dataset

__all__ = ["CLASS_NAMES", "build_nih_chestxray14", "find_data_entry", "main", "read_image_list"]

BUILDER_VERSION = "1.0.0"
CLASS_NAMES = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]
NO_FINDING = "No Finding"


def find_data_entry(root: Path) -> Path:
    found = sorted(p for p in root.glob("Data_Entry_2017*.csv*") if p.is_file())
    if not found:
        raise DatasetBuildError(f"{root}: no Data_Entry_2017*.csv found (pass --data-entry)")
    return found[0]


def read_image_list(path: os.PathLike | str) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DatasetBuildError(f"{path}: split list not found")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _image_locations(root: Path, names) -> dict[str, str]:
    """Image name -> path relative to ROOT (flat `images/` first, else one walk over ROOT)."""
    flat = root / "images"
    if flat.is_dir() and all((flat / n).is_file() for n in list(names)[:20]):
        return {name: f"images/{name}" for name in names}
    wanted, found = set(names), {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name in wanted:
                found[name] = str(Path(folder, name).relative_to(root).as_posix())
    return found


def build_nih_chestxray14(
    root: os.PathLike | str,
    data_entry: os.PathLike | str | None = None,
    train_val_list: os.PathLike | str | None = None,
    test_list: os.PathLike | str | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
    check_files: bool = False,
):
    """Returns `(DatasetDict(train, validation, test), meta, summary)` for `save_dataset`."""
    root = require_directory(root, "ChestX-ray14 root")
    data_entry = Path(data_entry) if data_entry else find_data_entry(root)
    frame, bad_lines = read_csv_columns(data_entry, ["Image Index", "Finding Labels", "Patient ID"])
    skipped = {"malformed_rows": bad_lines + int(frame.isna().any(axis=1).sum())}
    frame = frame.dropna().drop_duplicates("Image Index").set_index("Image Index")
    findings = frame["Finding Labels"].str.split("|")
    known = set(CLASS_NAMES) | {NO_FINDING}
    unknown = findings.map(lambda labels: not set(labels) <= known)
    skipped["unknown_finding"] = int(unknown.sum())
    frame, findings = frame[~unknown], findings[~unknown]
    labels = np.stack([np.isin(CLASS_NAMES, f).astype(np.float32) for f in findings]) if len(frame) else np.zeros((0, 14))

    lists = {"train_val": Path(train_val_list or root / "train_val_list.txt"), "test": Path(test_list or root / "test_list.txt")}
    names = {part: read_image_list(path) for part, path in lists.items()}
    rows = pd.DataFrame({"patient": frame["Patient ID"].to_numpy(), "labels": [tuple(r) for r in labels.tolist()]},
                        index=frame.index)
    parts = {}
    for part, listed in names.items():
        present = [n for n in listed if n in rows.index]
        skipped[f"{part}_not_in_data_entry"] = len(listed) - len(present)
        parts[part] = rows.loc[present].rename_axis("image_name").reset_index()
    locations = _image_locations(root, [n for p in parts.values() for n in p["image_name"]]) if check_files else None
    for part, table in parts.items():
        if locations is None:
            table["image_path"] = "images/" + table["image_name"]
        else:
            table["image_path"] = table["image_name"].map(locations)
            skipped[f"{part}_missing_image_file"] = int(table["image_path"].isna().sum())
            parts[part] = table.dropna(subset=["image_path"])
    held_out = hold_out_patients(parts["train_val"]["patient"], validation_fraction, seed)
    frames = {"train": parts["train_val"][~held_out], "validation": parts["train_val"][held_out], "test": parts["test"]}

    options = {"validation_fraction": validation_fraction, "seed": seed}
    dataset = labelled_dataset(frames, CLASS_NAMES, MULTI_LABEL, f"nih_chestxray14 {BUILDER_VERSION} {options}")
    meta = classification_meta(
        "nih_chestxray14", root.absolute(), CLASS_NAMES, MULTI_LABEL, options=options, builder_version=BUILDER_VERSION,
        sources={"data_entry": str(data_entry.absolute()), **{k: str(p.absolute()) for k, p in lists.items()}},
    )
    summary = classification_summary(
        "nih_chestxray14", frames, CLASS_NAMES, skipped, patients={s: int(f["patient"].nunique()) for s, f in frames.items()}
    )
    return dataset, meta, summary


def main(argv=None) -> None:
    parser = builder_argument_parser(
        "nih_chestxray14", __doc__, "locate every image under ROOT; drop (and count) those that are missing"
    )
    parser.add_argument("--root", required=True, help="ChestX-ray14 folder (images, Data_Entry_2017*.csv, split lists)")
    parser.add_argument("--data-entry", help="default: ROOT/Data_Entry_2017*.csv")
    parser.add_argument("--train-val-list", help="default: ROOT/train_val_list.txt")
    parser.add_argument("--test-list", help="default: ROOT/test_list.txt")
    parser.add_argument("--validation-fraction", type=float, default=0.1, help="patients of train_val_list held out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    built = build_nih_chestxray14(
        args.root, args.data_entry, args.train_val_list, args.test_list, args.validation_fraction, args.seed, args.check_files
    )
    save_and_report(built, args.output_dir, "NIH ChestX-ray14", __doc__)


if __name__ == "__main__":
    main()
