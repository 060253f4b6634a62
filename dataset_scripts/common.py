"""Pieces every dataset builder shares: input errors, CSV reading, fingerprints, saving and the build summary.

A builder turns the user's raw files into a `pandas.DataFrame` per split, converts it with
`frame_to_dataset` (content-derived fingerprint, explicit features) and hands the result to
`save_dataset`, which writes the folder layout of the "Datasets" contract in `docs/design.md`:
the `save_to_disk` output, `alta_dataset.json`, `build_summary.json` and the dataset card `README.md`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import datasets
import numpy as np
import pandas as pd
from datasets.table import InMemoryTable
from tqdm.auto import tqdm

from .dataset_card import write_dataset_card

DATASET_META_FILE = "alta_dataset.json"
BUILD_SUMMARY_FILE = "build_summary.json"


class DatasetBuildError(ValueError):
    """Unusable input for a dataset builder; the message names the file (and row or column) and the problem."""


class MissingColumnError(DatasetBuildError):
    def __init__(self, path: os.PathLike | str, column: str, found: Sequence[str]):
        self.path, self.column = str(path), column
        super().__init__(f"{path}: required column {column!r} is missing (found columns: {', '.join(found)})")


def find_table(folder: os.PathLike | str, stem: str) -> Path:
    """`folder/stem.csv` or `folder/stem.csv.gz` (users often decompress the PhysioNet files); error if neither exists."""
    folder = Path(folder)
    candidates = [folder / f"{stem}.csv", folder / f"{stem}.csv.gz"]
    for path in candidates:
        if path.is_file():
            return path
    raise DatasetBuildError(f"{folder}: neither {candidates[0].name} nor {candidates[1].name} found")


def read_csv_columns(
    path: os.PathLike | str, required: Sequence[str], optional: Sequence[str] = (), engine: str = "c", **read_csv_kwargs
) -> tuple[pd.DataFrame, int]:
    """Read the named columns of a CSV (plain or gzip) as strings.

    Returns the frame (empty cells are NaN) and the number of lines skipped because they had too many
    fields (`engine="pyarrow"`, four times faster on the large MIMIC tables, also skips lines with too
    few fields; the C engine fills those with NaN for the caller to count). The pyarrow engine cannot
    read quoted values that span lines. A missing required column raises `MissingColumnError` naming
    the file and the column.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetBuildError(f"{path}: file not found")
    try:
        header = pd.read_csv(path, nrows=0, **read_csv_kwargs).columns
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as error:
        raise DatasetBuildError(f"{path}: not a readable CSV file ({error})") from error
    for column in required:
        if column not in header:
            raise MissingColumnError(path, column, list(header))
    columns = list(required) + [c for c in optional if c in header and c not in required]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            # all columns, not `usecols`: with `usecols` pandas silently accepts lines with extra fields
            frame = pd.read_csv(path, dtype=str, on_bad_lines="warn", engine=engine, **read_csv_kwargs)
        except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError, ValueError) as error:
            raise DatasetBuildError(f"{path}: not a readable CSV file ({error})") from error
    messages = [str(w.message) for w in caught if issubclass(w.category, pd.errors.ParserWarning)]
    # the C engine reports all skipped lines in one warning, the pyarrow engine one per line
    skipped = sum(m.count("Skipping line") for m in messages) if engine == "c" else len(messages)
    return frame[columns], skipped


def parse_int_column(values: pd.Series) -> pd.Series:
    """Strings such as `"10000032"` or `"10000032.0"` as nullable Int64; anything else becomes <NA>."""
    numbers = pd.to_numeric(values, errors="coerce")
    whole = numbers.notna() & (numbers == np.floor(numbers))
    return numbers.where(whole).astype("Int64")


def content_fingerprint(*parts) -> str:
    """A hex digest of JSON-able values and DataFrames (hashed by content, row order included).

    Used as the `datasets` fingerprint: two builds from the same inputs with the same options get the
    same fingerprint, any change in the produced rows changes it, so caches downstream are never stale.
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, pd.DataFrame):
            digest.update(json.dumps(list(map(str, part.columns))).encode())
            digest.update(pd.util.hash_pandas_object(part, index=False).to_numpy().tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


def frame_to_dataset(frame: pd.DataFrame, features: datasets.Features, split: str, fingerprint: str) -> datasets.Dataset:
    """A `Dataset` holding exactly `features`' columns of `frame`, with a fingerprint derived from its content."""
    frame = frame[list(features)].reset_index(drop=True)
    table = InMemoryTable.from_pandas(frame, schema=features.arrow_schema, preserve_index=False)
    return datasets.Dataset(
        table,
        info=datasets.DatasetInfo(features=features),
        split=split,
        fingerprint=content_fingerprint(fingerprint, split, frame),
    )


def files_exist(root: os.PathLike | str, relative_paths: Iterable[str], desc: str = "checking files") -> np.ndarray:
    """Boolean array: does `root/path` exist, for each path (with a progress bar, since roots are often network mounts)."""
    root = Path(root)
    paths = list(relative_paths)
    return np.fromiter(
        (os.path.isfile(root / p) for p in tqdm(paths, desc=desc, unit="file", disable=None)), dtype=bool, count=len(paths)
    )


def drop_missing_files(
    frame: pd.DataFrame, column: str, root: os.PathLike | str, skipped: dict, reason: str = "missing_image_file"
) -> pd.DataFrame:
    """Rows of `frame` whose `root/<column>` file exists; the others are counted in `skipped[reason]`."""
    present = files_exist(root, frame[column], desc=f"checking {column}")
    skipped[reason] = skipped.get(reason, 0) + int((~present).sum())
    return frame[present]


def require_directory(path: os.PathLike | str, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DatasetBuildError(f"{path}: {what} is not a directory")
    return path


def _is_dataset_folder(folder: Path) -> bool:
    return any((folder / name).exists() for name in (DATASET_META_FILE, "dataset_dict.json", "state.json"))


def _write_json(path: Path, value: Mapping) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


def save_dataset(
    dataset: datasets.Dataset | datasets.DatasetDict, output_dir: os.PathLike | str, meta: Mapping, summary: Mapping,
    title: str | None = None, description: str | None = None,
) -> Path:
    """Write `dataset` (`save_to_disk`), `alta_dataset.json` (= `meta`), `build_summary.json` (= `summary`) and
    the dataset card `README.md` (`dataset_card.build_dataset_card`: `title`, `description` = the selection rules).

    `meta` must contain `kind` and `image_root`; `image_root` is stored as an absolute path. The folder
    is written next to `output_dir` first and then moved into place, so an interrupted build never
    leaves a half-written dataset. An existing dataset folder is replaced; any other non-empty folder
    is refused.
    """
    for key in ("kind", "image_root"):
        if key not in meta:
            raise ValueError(f"dataset metadata needs {key!r}; got keys {sorted(meta)}")
    output_dir = Path(output_dir).absolute()
    if output_dir.exists() and (not output_dir.is_dir() or (any(output_dir.iterdir()) and not _is_dataset_folder(output_dir))):
        raise DatasetBuildError(f"{output_dir}: exists and is not a dataset folder; refusing to overwrite it")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "image_root": str(Path(meta["image_root"]).expanduser().absolute())}

    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        dataset.save_to_disk(str(staging))
        _write_json(staging / DATASET_META_FILE, meta)
        _write_json(staging / BUILD_SUMMARY_FILE, summary)
        write_dataset_card(staging, dataset, meta, summary, title, description)
        if output_dir.exists():
            retired = staging.with_name(staging.name + ".old")
            output_dir.rename(retired)
            staging.rename(output_dir)
            shutil.rmtree(retired)
        else:
            staging.rename(output_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return output_dir


def builder_argument_parser(module: str, doc: str, check_files_help: str) -> argparse.ArgumentParser:
    """The parser every builder CLI starts from: `--output-dir` and `--check-files`."""
    parser = argparse.ArgumentParser(prog=f"python -m dataset_scripts.{module}", description=doc.split("\n\n")[0])
    parser.add_argument("--output-dir", required=True, help="where the dataset folder is written")
    parser.add_argument("--check-files", action="store_true", help=check_files_help)
    return parser


def save_and_report(built: tuple, output_dir: os.PathLike | str, title: str, description: str | None = None) -> Path:
    """Save a builder's `(dataset, meta, summary)` with `save_dataset` (its card gets `title` and `description`, the
    builder's documentation) and print the summary table."""
    dataset, meta, summary = built
    output = save_dataset(dataset, output_dir, meta, summary, title, description)
    print_summary(summary, title=f"{title} -> {output}")
    return output


def load_dataset_meta(dataset_dir: os.PathLike | str) -> dict:
    """The `alta_dataset.json` of a built dataset folder."""
    path = Path(dataset_dir) / DATASET_META_FILE
    if not path.is_file():
        raise DatasetBuildError(f"{dataset_dir}: no {DATASET_META_FILE}; not a folder written by dataset_scripts")
    return json.loads(path.read_text(encoding="utf-8"))


def _flatten(summary: Mapping, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(_flatten(value, name + "."))
        else:
            rows.append((name, value))
    return rows


def format_summary(summary: Mapping, title: str = "build summary") -> str:
    """A two-column text table of a (nested) summary dict; nested keys are joined with dots."""
    rows = [(name, f"{value:,}" if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else str(value))
            for name, value in _flatten(summary)]
    width = max([len(name) for name, _ in rows] + [len(title)])
    value_width = max([len(value) for _, value in rows] + [1])
    rule = "-" * (width + value_width + 3)
    lines = [title, rule] + [f"{name:<{width}}   {value:>{value_width}}" for name, value in rows] + [rule]
    return "\n".join(lines)


def print_summary(summary: Mapping, title: str = "build summary") -> None:
    print(format_summary(summary, title))


__all__ = [
    "BUILD_SUMMARY_FILE",
    "DATASET_META_FILE",
    "DatasetBuildError",
    "MissingColumnError",
    "builder_argument_parser",
    "content_fingerprint",
    "drop_missing_files",
    "files_exist",
    "find_table",
    "format_summary",
    "frame_to_dataset",
    "load_dataset_meta",
    "parse_int_column",
    "print_summary",
    "read_csv_columns",
    "require_directory",
    "save_and_report",
    "save_dataset",
]
