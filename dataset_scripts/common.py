"""Pieces every dataset builder shares: input errors, CSV reading, fingerprints, saving and the build summary.

A builder turns the user's raw files into a `pandas.DataFrame` per split, converts it with
`frame_to_dataset` (content-derived fingerprint, explicit features) and hands the result to
`save_dataset`, which writes the folder layout of the "Datasets" contract in `docs/design.md`:
the `save_to_disk` output, `alta_dataset.json`, `build_summary.json` and the dataset card `README.md`.
"""

from __future__ import annotations

import argparse
import csv
import functools
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterable, Mapping, Sequence

import datasets
import numpy as np
import pandas as pd
from datasets.table import InMemoryTable
from tqdm.auto import tqdm

from .dataset_card import write_dataset_card

DATASET_META_FILE = "alta_dataset.json"
BUILD_SUMMARY_FILE = "build_summary.json"
# A build stops when more than this share of a table's lines cannot be read (wrong field count, swallowed by a stray
# quote), and at least MIN_UNREADABLE_LINES_TO_FAIL of them: a few bad lines of a huge table are counted and named,
# a table that is largely unreadable is an input to fix, not a dataset to build.
MAX_UNREADABLE_LINE_FRACTION = 0.01
MIN_UNREADABLE_LINES_TO_FAIL = 10


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

    Returns the frame (empty cells are NaN) and the number of data lines that could not be read (too many
    fields; with `engine="pyarrow"`, four times faster on the large MIMIC tables, also too few fields and lines
    swallowed by an unterminated quote; the C engine fills short lines with NaN for the caller to count). The
    pyarrow engine cannot read quoted values that span lines. Unreadable lines are reported with the first one
    named (a warning), and the read fails when they exceed `MAX_UNREADABLE_LINE_FRACTION` of the table and number
    at least `MIN_UNREADABLE_LINES_TO_FAIL`. A missing required column raises `MissingColumnError` naming the
    file and the column; a file with a header and no data lines is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetBuildError(f"{path}: file not found")
    try:
        header = pd.read_csv(path, nrows=0, **read_csv_kwargs).columns
    except pd.errors.EmptyDataError as error:
        raise DatasetBuildError(f"{path}: the file is empty (no header line)") from error
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as error:
        raise DatasetBuildError(f"{path}: not a readable CSV file ({error})") from error
    for column in required:
        if column not in header:
            raise MissingColumnError(path, column, list(header))
    columns = list(required) + [c for c in optional if c in header and c not in required]
    # pyarrow: the file is decompressed once here, its lines counted, and the bytes parsed from memory
    raw = None if engine == "c" else _read_bytes(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            # all columns, not `usecols`: with `usecols` pandas silently accepts lines with extra fields
            source = path if raw is None else io.BytesIO(raw)
            frame = pd.read_csv(source, dtype=str, on_bad_lines="warn", engine=engine, **read_csv_kwargs)
        except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError, ValueError) as error:
            raise DatasetBuildError(f"{path}: not a readable CSV file ({error})") from error
    messages = [str(w.message) for w in caught if issubclass(w.category, pd.errors.ParserWarning)]
    if engine == "c":  # one warning for all skipped lines, with their numbers
        skipped = sum(m.count("Skipping line") for m in messages)
        data_lines = len(frame) + skipped
        first_bad = next((line.strip() for m in messages for line in m.splitlines() if "Skipping line" in line), None)
    else:  # values never span lines: every non-empty line after the header is a row, or was lost
        data_lines = _count_data_lines(raw)
        skipped = max(0, data_lines - len(frame))
        first_bad = _first_bad_line(path, len(header)) if skipped else None
    if data_lines == 0:
        raise DatasetBuildError(f"{path}: the file has a header but no data lines")
    if skipped:
        _report_unreadable_lines(path, skipped, data_lines, first_bad)
    return frame[columns], skipped


def _open_text(path: Path, errors: str = "strict"):
    opener = gzip.open if path.suffix == ".gz" else open
    return opener(path, "rt", encoding="utf-8", errors=errors, newline="")


_EMPTY_LINE = re.compile(rb"\n(?=\r?\n)")


def _read_bytes(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError) as error:
        raise DatasetBuildError(f"{path}: not a readable CSV file ({error})") from error


def _count_data_lines(raw: bytes) -> int:
    """Non-empty lines after the header (C-speed byte counts: no decoding, no Python loop per line)."""
    lines = raw.count(b"\n") + (0 if raw.endswith(b"\n") or not raw else 1)
    return max(0, lines - len(_EMPTY_LINE.findall(raw)) - 1)


def _first_bad_line(path: Path, num_fields: int) -> str | None:
    """`line N: <text>` of the first line that is not one CSV record of `num_fields` fields on its own."""
    with _open_text(path, errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if number == 1 or not line.strip():
                continue
            fields = next(csv.reader([line]), [])
            if line.count('"') % 2 or len(fields) != num_fields:
                return f"line {number}: {line.strip()[:120]!r}"
    return None


def _report_unreadable_lines(path: Path, skipped: int, data_lines: int, first_bad: str | None) -> None:
    where = f"; the first is {first_bad}" if first_bad else ""
    message = f"{path}: {skipped} of {data_lines} data lines cannot be read (wrong number of fields or a stray quote){where}"
    if skipped >= MIN_UNREADABLE_LINES_TO_FAIL and skipped > MAX_UNREADABLE_LINE_FRACTION * data_lines:
        raise DatasetBuildError(
            f"{message}. More than {MAX_UNREADABLE_LINE_FRACTION:.0%} of the table is unreadable: fix the file"
        )
    warnings.warn(message + "; those lines are skipped and counted", UserWarning, stacklevel=3)


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


def escapes_image_root(path: str) -> bool:
    """An image path a dataset must not hold: absolute (POSIX or Windows), or climbing out of the root with `..`."""
    return (PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute() or bool(PureWindowsPath(path).drive)
            or ".." in PurePosixPath(path.replace("\\", "/")).parts)


def drop_unusable_image_paths(frame: pd.DataFrame, column: str, skipped: dict, prefix: str = "") -> pd.DataFrame:
    """Rows of `frame` whose `column` is a safe relative path seen for the first time. Paths that escape the image
    root are counted in `skipped[prefix + "path_outside_image_root"]`, repeats of a path already kept in
    `skipped[prefix + "duplicate_images"]`."""
    paths = frame[column].astype(str)
    outside = paths.map(escapes_image_root).to_numpy(dtype=bool)
    duplicate = paths.duplicated().to_numpy() & ~outside
    skipped[f"{prefix}path_outside_image_root"] = skipped.get(f"{prefix}path_outside_image_root", 0) + int(outside.sum())
    skipped[f"{prefix}duplicate_images"] = skipped.get(f"{prefix}duplicate_images", 0) + int(duplicate.sum())
    if outside.any():
        warnings.warn(f"{int(outside.sum())} {column} value(s) leave the image root and are skipped, e.g. "
                      f"{paths[outside].iloc[0]!r}", UserWarning, stacklevel=2)
    return frame[~outside & ~duplicate]


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
    parser = argparse.ArgumentParser(prog=f"python -m alta_hf.dataset_scripts.{module}", description=doc.split("\n\n")[0])
    parser.add_argument("--output-dir", required=True, help="where the dataset folder is written")
    parser.add_argument("--check-files", action="store_true", help=check_files_help)
    return parser


def save_and_report(built: tuple, output_dir: os.PathLike | str, title: str, description: str | None = None) -> Path:
    """Save a builder's `(dataset, meta, summary)` with `save_dataset` (its card gets `title` and `description`, the
    builder's documentation) and print the summary table. A build whose every split is empty is refused (the summary
    says where the rows went)."""
    dataset, meta, summary = built
    rows = summary.get("rows") or {}
    if rows and not any(rows.values()):
        raise DatasetBuildError(
            f"{title}: no usable rows in any split; the inputs are empty or every row was skipped\n"
            + format_summary(summary, "what the build found")
        )
    output = save_dataset(dataset, output_dir, meta, summary, title, description)
    print_summary(summary, title=f"{title} -> {output}")
    return output


def reports_build_errors(main):
    """For a builder's `main`: bad input (`DatasetBuildError`) ends the command with its one-line message and exit
    status 1, instead of a traceback."""

    @functools.wraps(main)
    def run(argv=None):
        try:
            return main(argv)
        except DatasetBuildError as error:
            sys.exit(f"error: {error}")

    return run


def load_dataset_meta(dataset_dir: os.PathLike | str) -> dict:
    """The `alta_dataset.json` of a built dataset folder."""
    path = Path(dataset_dir) / DATASET_META_FILE
    if not path.is_file():
        raise DatasetBuildError(f"{dataset_dir}: no {DATASET_META_FILE}; not a folder written by dataset_scripts")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetBuildError(f"{path}: not a UTF-8 JSON file ({error})") from error


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
    "drop_unusable_image_paths",
    "escapes_image_root",
    "files_exist",
    "find_table",
    "format_summary",
    "frame_to_dataset",
    "load_dataset_meta",
    "parse_int_column",
    "print_summary",
    "read_csv_columns",
    "reports_build_errors",
    "require_directory",
    "save_and_report",
    "save_dataset",
]
