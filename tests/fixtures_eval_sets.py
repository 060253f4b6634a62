"""Synthetic evaluation-set inputs in the published layouts (docs/datasets.md, "Evaluation sets").

CheXpert 5x200 (`chexpert_5x200.csv` of GLoRIA/ALTA), ConVIRT's CheXpert 8x200 files and the RSNA
Pneumonia files (Kaggle labels + MRM/ALTA split lists). The images themselves are not needed by the
builders; `touch_files` creates empty stand-ins for the `--check-files` tests.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd

CHEXPERT_COLUMNS = [
    "Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly",
    "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
    "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices",
]
LABEL_COLUMNS = CHEXPERT_COLUMNS[5:]
FIVE = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
EIGHT_IN_CONVIRT_ORDER = ["Fracture", "Edema", "Pneumonia", "Cardiomegaly", "Pneumothorax", "Atelectasis", "Pleural Effusion", "No Finding"]


def chexpert_path(patient: int, study: int = 1, view: str = "view1_frontal") -> str:
    return f"CheXpert-v1.0-small/train/patient{patient:05d}/study{study}/{view}.jpg"


def _chexpert_row(path: str, positives: dict[str, float], index: int) -> dict:
    row = {"Path": path, "Sex": "Male" if index % 2 else "Female", "Age": 40 + index % 50, "Frontal/Lateral": "Frontal",
           "AP/PA": "AP" if index % 3 else "PA"}
    row.update({column: positives.get(column, 0.0) for column in LABEL_COLUMNS})
    return row


def write_chexpert_5x200(path: Path, per_class: int = 3, bad_rows: bool = False) -> list[tuple[str, int, str]]:
    """A `chexpert_5x200.csv` (unnamed index column, 21 columns, multi-line impressions, blocks in class order).

    Returns the expected `(image_path, label, report)` rows. `bad_rows` appends a row with two
    positives and one with none (which the builder must skip).
    """
    rows, expected = [], []
    for label, name in enumerate(FIVE):
        for k in range(per_class):
            index = len(rows)
            impression = f"\n1. {name.lower()} finding number {k}, \"quoted\".\n2. no pneumothorax.\n"
            row = _chexpert_row(chexpert_path(1000 + index), {name: 1.0}, index)
            row["Report Impression"] = impression
            rows.append(row)
            expected.append((row["Path"], label, impression))
    if bad_rows:
        two = _chexpert_row(chexpert_path(5000), {"Edema": 1.0, "Atelectasis": 1.0}, len(rows))
        none = _chexpert_row(chexpert_path(5001), {"No Finding": 1.0}, len(rows) + 1)
        rows += [{**two, "Report Impression": "two"}, {**none, "Report Impression": "none"}]
    pd.DataFrame(rows, columns=CHEXPERT_COLUMNS + ["Report Impression"]).to_csv(path)  # index=True: the unnamed column
    return expected


def write_convirt(folder: Path, per_class: int = 2, queries_per_class: int = 2, texts_per_class: int = 1) -> dict:
    """ConVIRT's three files under `folder`; returns the expected rows per split as `(value, class name)`."""
    (folder / "image-retrieval").mkdir(parents=True)
    (folder / "text-retrieval").mkdir(parents=True)
    candidates, expected = [], {"candidates": [], "image_queries": [], "text_queries": []}
    for name in EIGHT_IN_CONVIRT_ORDER:
        for _ in range(per_class):
            index = len(candidates)
            row = _chexpert_row(chexpert_path(20000 + index), {name: 1.0}, index)
            candidates.append(row)
            expected["candidates"].append((row["Path"], name))
    # not usable: an uncertain label, a positive outside the 8 classes, two positives
    candidates.append(_chexpert_row(chexpert_path(29000), {"Edema": 1.0, "Lung Opacity": -1.0}, 0))
    candidates.append(_chexpert_row(chexpert_path(29001), {"Lung Lesion": 1.0}, 1))
    candidates.append(_chexpert_row(chexpert_path(29002), {"Edema": 1.0, "Pneumonia": 1.0}, 2))
    frame = pd.DataFrame(candidates, columns=CHEXPERT_COLUMNS)
    frame.to_csv(folder / "image-retrieval" / "candidate.csv", index=False, float_format="%.1f")
    frame.to_csv(folder / "text-retrieval" / "candidate.csv", index=False, float_format="%.1f")

    lines = ["Variable,Path"]
    for name in sorted(EIGHT_IN_CONVIRT_ORDER):
        for k in range(queries_per_class):
            path = chexpert_path(30000 + len(lines), view="view2_frontal" if k else "view1_frontal")
            lines.append(f"{name},{path}")
            expected["image_queries"].append((path, name))
    lines.append(f"Lung Lesion,{chexpert_path(39999)}")  # not one of the 8 classes
    (folder / "image-retrieval" / "query.csv").write_text("\n".join(lines) + "\n")

    lines = ["Variable,Text"]
    for name in EIGHT_IN_CONVIRT_ORDER:
        for k in range(texts_per_class):
            text = f"A communuted finding of {name.lower()} is present{'.' if k % 2 == 0 else ', likely.'}"
            lines.append(f'{name},"{text}"' if "," in text else f"{name},{text}")
            expected["text_queries"].append((text, name))
    (folder / "text-retrieval" / "query.csv").write_text("\n".join(lines) + "\n")
    return expected


def patient_id(n: int) -> str:
    return str(uuid.UUID(int=0x1234_5678_9ABC_0DEF_0000_0000_0000_0000 + n * 0x1_0000_0001))


def write_rsna(root: Path, n_val: int = 6, n_test: int = 4) -> dict:
    """Kaggle `stage_2_train_labels.csv` (one row per box, unsorted) and the two split lists (trailing spaces).

    Returns `{"validation": [(path, label)], "test": [...], "mismatch": patientId}`: the validation list
    holds one label that disagrees with the Kaggle CSV, and both lists one malformed line.
    """
    root.mkdir(parents=True, exist_ok=True)
    label_rows, val = [], []
    for k in range(n_val + 3):  # three training patients that are not in the validation list
        pid = patient_id(k)
        boxes = k % 3  # 0 = negative, 1 or 2 boxes = positive
        if boxes == 0:
            label_rows.append(f"{pid},,,,,0")
        for b in range(boxes):
            label_rows.append(f"{pid},{264.0 + b:.1f},{152.0:.1f},{213.0:.1f},{379.0 + b:.1f},1")
        if k >= 3:
            val.append((f"stage_2_train_images/{pid}.dcm", int(boxes > 0)))
    label_rows = label_rows[::-1]  # the real file is not sorted by patientId
    (root / "stage_2_train_labels.csv").write_text("patientId,x,y,width,height,Target\n" + "\n".join(label_rows) + "\n")

    mismatch_path, mismatch_label = val[0]
    val[0] = (mismatch_path, 1 - mismatch_label)
    test = [(f"stage_2_test_images/{patient_id(1000 + k)}.dcm", k % 2) for k in range(n_test)]
    for name, rows in (("val_list.txt", val), ("test_list.txt", test)):
        lines = [f"{path} {label} " for path, label in rows]
        lines.insert(1, "stage_2_train_images/broken.dcm maybe ")
        (root / name).write_text("\n".join(lines) + "\n")
    return {"validation": val, "test": test, "mismatch": Path(mismatch_path).stem}


def touch_files(root: Path, relative_paths) -> None:
    for relative in relative_paths:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
