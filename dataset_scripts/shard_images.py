"""Pre-resized image shards of a pre-training dataset: every referenced image decoded once and embedded.

    python -m alta_hf.dataset_scripts.shard_images --dataset DIR [--root MIMIC_ROOT] --size 512 --output-dir OUT
        [--num-proc N] [--shard-size ROWS] [--format jpeg|png] [--quality 95] [--max-shards N]

Reads a pre-training dataset (`dataset_scripts.mimic_cxr`, `dataset_scripts.demo`) and writes the same splits and
columns plus `frontal_image`, `lateral_image`, `prior_frontal_image`, `prior_lateral_image` (`datasets.Image()`,
None for absent views), which `training.data.view_sources` prefers over the path columns.

The work is done in numbered shards inside `OUT.partial/`, each written to a temporary name and renamed, so an
interrupted job continues where it stopped (finished shards are kept) when the same command is run again:

1. images: the distinct image paths of all splits, in order of first use, `--shard-size` per shard; worker processes
   decode each file once (reduced JPEG decoding, `load_radiograph(min_size=size)`), shrink its shorter side to
   `size` with the processor's bicubic resize (never enlarging) and encode it (JPEG quality 95 by default, or PNG);
2. rows: each split, `--shard-size` rows per shard, takes its images from the memory-mapped image shards.

The splits are then saved into OUT with `save_dataset` (`alta_dataset.json` adds `images_embedded`) and the work
folder is removed. Missing or unreadable files are counted; their view becomes None (its path column too, so training
never goes back to the file); a study whose current frontal image is unusable is dropped and counted.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc
from datasets.arrow_writer import ArrowWriter
from PIL import Image
from tqdm.auto import tqdm

from alta_hf.processing.image_processing_alta import _resize_shorter_side
from alta_hf.processing.radiograph_io import RadiographLoadError, load_radiograph

from .common import (
    BUILD_SUMMARY_FILE,
    DATASET_META_FILE,
    DatasetBuildError,
    _is_dataset_folder,
    load_dataset_meta,
    print_summary,
    require_directory,
    save_dataset,
)

PATH_COLUMNS = ("frontal_path", "lateral_path", "prior_frontal_path", "prior_lateral_path")
IMAGE_COLUMNS = ("frontal_image", "lateral_image", "prior_frontal_image", "prior_lateral_image")
IMAGE_FORMATS = ("jpeg", "png")
WORK_SUFFIX = ".partial"
_PLAN_FILE = "plan.json"
_IMAGE_SCHEMA = pa.schema([("path", pa.string()), ("data", pa.binary()), ("problem", pa.string()),
                           ("message", pa.string())])
_MAX_PRINTED_PROBLEMS = 10


@dataclass(frozen=True)
class ShardOptions:
    """What the images look like in the shards; part of the plan a resumed job must match."""

    size: int
    image_format: str = "jpeg"
    quality: int = 95

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"size must be a positive number of pixels, got {self.size}")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"JPEG quality must be within 1-100, got {self.quality}")

    def as_dict(self) -> dict:
        return {"size": self.size, "format": self.image_format, "quality": self.quality if self.image_format == "jpeg" else None}


def shrink_radiograph(source, size: int) -> Image.Image:
    """`source` decoded for a shorter side >= `size` and shrunk to exactly `size` as the processor resizes (never enlarged)."""
    image = load_radiograph(source, min_size=size)
    return _resize_shorter_side(image, size, Image.Resampling.BICUBIC) if min(image.size) > size else image


def encode_image(image: Image.Image, options: ShardOptions) -> bytes:
    buffer = io.BytesIO()
    if options.image_format == "png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=options.quality)
    return buffer.getvalue()


def _write_atomically(path: Path, write) -> None:
    """`write(temporary_path)`, then rename into place: a shard file exists only when complete."""
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def _write_image_shard(task: tuple) -> tuple[int, int]:
    """Decode, shrink and encode one shard of images into an Arrow IPC file; returns (shard number, images)."""
    number, paths, root, options, target = task
    columns = {"path": [], "data": [], "problem": [], "message": []}
    for relative in paths:
        file = Path(root) / relative
        data = problem = message = None
        try:
            data = encode_image(shrink_radiograph(file, options.size), options)
        except (RadiographLoadError, Image.DecompressionBombError) as error:  # a batch job skips and counts
            problem = "missing_file" if not file.exists() else "unreadable_file"
            message = str(error) if isinstance(error, RadiographLoadError) else f"{file}: {error}"
        for key, value in zip(columns, (relative, data, problem, message)):
            columns[key].append(value)
    table = pa.table(columns, schema=_IMAGE_SCHEMA)

    def write(temporary: Path) -> None:
        with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, _IMAGE_SCHEMA) as writer:
            writer.write_table(table)

    _write_atomically(Path(target), write)
    return number, len(paths)


def _read_image_shard(path: Path) -> pa.Table:
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()  # zero-copy: bytes stay on disk until taken


def _distinct_paths(splits: datasets.DatasetDict) -> dict[str, int]:
    """Every image path of every split, once, in order of first use (row by row, view by view) -> its position."""
    positions = {}
    for split in splits.values():
        for row_paths in zip(*(_column(split, column) for column in PATH_COLUMNS)):
            for path in row_paths:
                if path and path not in positions:
                    positions[path] = len(positions)
    return positions


def _column(split: datasets.Dataset, column: str) -> list:
    return split.with_format("arrow")[column].to_pylist()


def _load_source(dataset_dir: os.PathLike | str) -> tuple[datasets.DatasetDict, dict]:
    meta = load_dataset_meta(dataset_dir)
    if meta.get("kind") != "pretraining":
        raise DatasetBuildError(f"{dataset_dir}: kind {meta.get('kind')!r}; shards are made of pre-training datasets")
    try:
        splits = datasets.load_from_disk(str(dataset_dir))
    except (FileNotFoundError, ValueError, OSError) as error:
        raise DatasetBuildError(f"{dataset_dir}: not a dataset written by save_to_disk ({error})") from error
    if not isinstance(splits, datasets.DatasetDict):
        raise DatasetBuildError(f"{dataset_dir}: expected a DatasetDict of splits, found a single {type(splits).__name__}")
    for name, split in splits.items():
        missing = [c for c in PATH_COLUMNS if c not in split.column_names]
        if missing:
            raise DatasetBuildError(f"{dataset_dir}[{name}]: missing columns {missing}; found {split.column_names}")
        present = [c for c in IMAGE_COLUMNS if c in split.column_names]
        if present:
            raise DatasetBuildError(f"{dataset_dir}[{name}]: already has embedded images ({present}); shard the source dataset")
    return splits, meta


def _output_features(features: datasets.Features) -> datasets.Features:
    return datasets.Features({**features, **{column: datasets.Image() for column in IMAGE_COLUMNS}})


class ShardJob:
    """The shard plan of one (dataset, root, options) and the work folder that holds its finished shards."""

    def __init__(self, dataset_dir, root, output_dir, options: ShardOptions, shard_size: int = 1000):
        if shard_size < 1:
            raise ValueError(f"shard size must be at least 1, got {shard_size}")
        self.dataset_dir, self.output_dir = Path(dataset_dir), Path(output_dir).absolute()
        if self.output_dir.resolve() == self.dataset_dir.resolve():
            raise DatasetBuildError(f"{self.output_dir}: the output folder must differ from the source dataset")
        if self.output_dir.is_dir() and any(self.output_dir.iterdir()) and not _is_dataset_folder(self.output_dir):
            # checked now rather than by save_dataset after hours of decoding
            raise DatasetBuildError(f"{self.output_dir}: exists and is not a dataset folder; refusing to overwrite it")
        self.splits, self.meta = _load_source(self.dataset_dir)
        self.root = require_directory(Path(root or self.meta["image_root"]), "the image root (--root)").absolute()
        self.options, self.shard_size = options, shard_size
        self.work_dir = self.output_dir.with_name(self.output_dir.name + WORK_SUFFIX)
        self.positions = _distinct_paths(self.splits)
        self.paths = list(self.positions)
        self.plan = {
            "source": str(self.dataset_dir.absolute()),
            "source_fingerprints": {name: split._fingerprint for name, split in self.splits.items()},
            "image_root": str(self.root),
            "images": len(self.paths),
            "shard_size": shard_size,
            **options.as_dict(),
        }

    # ----- work folder ------------------------------------------------------------------------------------------
    def finished_summary(self) -> dict | None:
        """The build summary of OUT when it was already made by this plan (a rerun after the end redoes nothing)."""
        meta_file = self.output_dir / DATASET_META_FILE
        if meta_file.is_file() and json.loads(meta_file.read_text(encoding="utf-8")).get("shard_plan") == self.plan:
            return json.loads((self.output_dir / BUILD_SUMMARY_FILE).read_text(encoding="utf-8"))
        return None

    def prepare_work_dir(self) -> None:
        """Create the work folder, or check that the one found was started by the same plan."""
        plan_file = self.work_dir / _PLAN_FILE
        if plan_file.is_file():
            found = json.loads(plan_file.read_text(encoding="utf-8"))
            if found != self.plan:
                changed = sorted(k for k in set(found) | set(self.plan) if found.get(k) != self.plan.get(k))
                raise DatasetBuildError(
                    f"{self.work_dir}: an unfinished shard job with other settings ({', '.join(changed)}); rerun it "
                    f"with its settings, or delete the folder to start afresh"
                )
        else:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            _write_atomically(plan_file, lambda t: t.write_text(json.dumps(self.plan, indent=2) + "\n", encoding="utf-8"))
        for leftover in self.work_dir.glob("*.tmp-*"):  # written by an interrupted run
            leftover.unlink()

    def image_shard_file(self, number: int) -> Path:
        return self.work_dir / f"images-{number:05d}.arrow"

    def row_shard_file(self, split: str, number: int) -> Path:
        return self.work_dir / f"rows-{split}-{number:05d}.arrow"

    @property
    def num_image_shards(self) -> int:
        return math.ceil(len(self.paths) / self.shard_size)

    def num_row_shards(self, split: str) -> int:
        return max(1, math.ceil(self.splits[split].num_rows / self.shard_size))

    # ----- phase 1: images --------------------------------------------------------------------------------------
    def images_done(self) -> bool:
        return all(self.image_shard_file(n).is_file() for n in range(self.num_image_shards))

    def rows_done(self) -> bool:
        return all(self.row_shard_file(split, n).is_file() for split in self.splits for n in range(self.num_row_shards(split)))

    def write_image_shards(self, num_proc: int, max_shards: int | None) -> int:
        """Decode the images of the shards not yet written; returns how many shards were written."""
        pending = [n for n in range(self.num_image_shards) if not self.image_shard_file(n).is_file()]
        done_images = len(self.paths) - sum(len(self._shard_paths(n)) for n in pending)
        todo = pending if max_shards is None else pending[:max_shards]
        tasks = [(n, self._shard_paths(n), str(self.root), self.options, str(self.image_shard_file(n))) for n in todo]
        with tqdm(total=len(self.paths), initial=done_images, desc="decoding images", unit="image", disable=None) as bar:
            if num_proc > 1 and len(tasks) > 1:
                with ProcessPoolExecutor(min(num_proc, len(tasks)), mp_context=multiprocessing.get_context("spawn")) as pool:
                    for _, count in pool.map(_write_image_shard, tasks):
                        bar.update(count)
            else:
                for task in tasks:
                    bar.update(_write_image_shard(task)[1])
        return len(tasks)

    def _shard_paths(self, number: int) -> list[str]:
        return self.paths[number * self.shard_size:(number + 1) * self.shard_size]

    def image_table(self) -> pa.Table:
        tables = [_read_image_shard(self.image_shard_file(n)) for n in range(self.num_image_shards)]
        table = pa.concat_tables(tables) if tables else _IMAGE_SCHEMA.empty_table()
        if table["path"].to_pylist() != self.paths:
            raise DatasetBuildError(f"{self.work_dir}: the image shards do not match the dataset; delete the folder and rerun")
        return table

    # ----- phase 2: rows ----------------------------------------------------------------------------------------
    def write_row_shards(self, images: pa.Table, max_shards: int | None) -> int:
        todo = [(split, n) for split in self.splits for n in range(self.num_row_shards(split))
                if not self.row_shard_file(split, n).is_file()]
        if max_shards is not None:
            todo = todo[:max_shards]
        for split, number in tqdm(todo, desc="writing rows", unit="shard", disable=None):
            source = self.splits[split]
            rows = source[number * self.shard_size:(number + 1) * self.shard_size]
            rows = _attach_images(rows, images, self.positions)
            features = _output_features(source.features)

            def write(temporary: Path) -> None:
                with ArrowWriter(features=features, path=str(temporary)) as writer:
                    writer.write_batch(rows)
                    writer.finalize()

            _write_atomically(self.row_shard_file(split, number), write)
        return len(todo)

    # ----- result -----------------------------------------------------------------------------------------------
    def assemble(self) -> datasets.DatasetDict:
        """The finished row shards, memory-mapped (nothing is copied until `save_dataset` writes them)."""
        return datasets.DatasetDict({
            split: datasets.concatenate_datasets([
                datasets.Dataset.from_file(str(self.row_shard_file(split, n))) for n in range(self.num_row_shards(split))
            ])
            for split in self.splits
        })

    def summary(self, images: pa.Table, result: datasets.DatasetDict) -> dict:
        problems = images["problem"].to_pylist()
        messages = [m for m in images["message"].to_pylist() if m]
        written = len(images) - images["data"].null_count
        stored_bytes = pc.sum(pc.binary_length(images["data"])).as_py() or 0
        views_dropped, rows_dropped = {}, {}
        for split, source in self.splits.items():
            for column in PATH_COLUMNS:
                bad = sum(1 for p in _column(source, column) if p and problems[self.positions[p]])
                if column == PATH_COLUMNS[0]:
                    rows_dropped[split] = bad
                else:
                    views_dropped[f"{split}.{column}"] = bad
        return {
            "builder": "shard_images",
            "rows": {split: result[split].num_rows for split in result},
            "images": {
                "distinct": len(self.paths),
                "written": written,
                "missing_file": problems.count("missing_file"),
                "unreadable_file": problems.count("unreadable_file"),
                "mean_bytes": round(stored_bytes / written) if written else 0,
            },
            "dropped_studies_unusable_frontal": rows_dropped,
            "dropped_views": views_dropped,
            "first_problems": messages[:_MAX_PRINTED_PROBLEMS],
        }

    def output_meta(self) -> dict:
        return {
            **self.meta,
            "image_root": str(self.root),
            "images_embedded": True,
            "image_columns": list(IMAGE_COLUMNS),
            "shard_source": str(self.dataset_dir.absolute()),
            "shard_image_size": self.options.size,
            "shard_image_format": self.options.image_format,
            "shard_image_quality": self.options.as_dict()["quality"],
            "shard_plan": self.plan,
        }


def _attach_images(rows: dict, images: pa.Table, index: dict) -> dict:
    """Rows (dict of columns) with the four image columns; unusable views None, rows without a frontal image removed."""
    data = images["data"]
    for path_column, image_column in zip(PATH_COLUMNS, IMAGE_COLUMNS):
        positions = pa.array([index[p] if p else None for p in rows[path_column]], type=pa.int64())
        payload = data.take(positions).to_pylist()
        rows[image_column] = [None if b is None else {"bytes": b, "path": None} for b in payload]
        rows[path_column] = [p if b is not None else None for p, b in zip(rows[path_column], payload)]
    keep = [i for i, image in enumerate(rows[IMAGE_COLUMNS[0]]) if image is not None]
    return {column: [values[i] for i in keep] for column, values in rows.items()}


def shard_images(
    dataset_dir, output_dir, size: int, root=None, num_proc: int | None = None, shard_size: int = 1000,
    image_format: str = "jpeg", quality: int = 95, max_shards: int | None = None,
) -> dict | None:
    """Run (or resume) a shard job; returns the build summary, or None when `max_shards` stopped it before the end."""
    job = ShardJob(dataset_dir, root, output_dir, ShardOptions(size, image_format, quality), shard_size)
    finished = job.finished_summary()
    if finished is not None:
        return finished
    job.prepare_work_dir()
    written = job.write_image_shards(num_proc or os.cpu_count() or 1, max_shards)
    if not job.images_done():
        return None
    images = job.image_table()
    job.write_row_shards(images, None if max_shards is None else max_shards - written)
    if not job.rows_done():
        return None
    result = job.assemble()
    summary = job.summary(images, result)
    save_dataset(result, job.output_dir, job.output_meta(), summary, "Pre-resized image shards", __doc__)
    del result, images
    shutil.rmtree(job.work_dir)
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alta_hf.dataset_scripts.shard_images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", required=True, help="where the sharded dataset folder is written")
    parser.add_argument("--dataset", required=True, help="a pre-training dataset folder (dataset_scripts.mimic_cxr / demo)")
    parser.add_argument("--root", help="image root the path columns are relative to (default: the dataset's image_root)")
    parser.add_argument("--size", type=int, default=512, help="shorter side of the stored images (default 512: the "
                        "training recipe's largest resize; smaller images are kept as they are)")
    parser.add_argument("--num-proc", type=int, default=None, help="decoding processes (default: all cores)")
    parser.add_argument("--shard-size", type=int, default=1000, help="images per image shard and rows per row shard")
    parser.add_argument("--format", choices=IMAGE_FORMATS, default="jpeg", dest="image_format",
                        help="jpeg (default): small and fast to decode; png: lossless, about 1.7x the bytes and "
                             "half the training throughput (see docs/shards.md)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality for --format jpeg")
    parser.add_argument("--max-shards", type=int, default=None,
                        help="stop after writing this many shards (resume later by running the same command again)")
    args = parser.parse_args(argv)
    try:
        summary = shard_images(args.dataset, args.output_dir, args.size, root=args.root, num_proc=args.num_proc,
                               shard_size=args.shard_size, image_format=args.image_format, quality=args.quality,
                               max_shards=args.max_shards)
    except (DatasetBuildError, ValueError) as error:  # bad input: one line naming the folder, no traceback
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if summary is None:
        print(f"stopped after --max-shards {args.max_shards} shards; finished shards are kept in "
              f"{Path(args.output_dir).absolute()}{WORK_SUFFIX}: run the same command again to continue")
    else:
        print_summary({k: v for k, v in summary.items() if k != "first_problems"}, f"image shards -> {args.output_dir}")
        for message in summary["first_problems"]:
            print(f"skipped: {message}")


__all__ = ["IMAGE_COLUMNS", "ShardJob", "ShardOptions", "encode_image", "main", "shard_images", "shrink_radiograph"]

if __name__ == "__main__":
    main()
