"""An on-disk index of image embeddings, written shard by shard (so that an interrupted run resumes without redoing a
finished shard) by `python -m alta_hf.evaluation.embed` and read by `python -m alta_hf.evaluation.search`.

    OUT/index.json             what was embedded: model, inputs, shard size, format; totals once complete
    OUT/shard-00000.safetensors  `embeddings` (n, d) float32 + `indices` (n,) into the input list; metadata: the
                                 embedded paths and the skipped files with their errors
    OUT/shard-00000.parquet      the same as a table: `path` (string), `embedding` (list<float32>); the skipped files
                                 in the schema metadata

Every file is written under a temporary name and renamed into place, so a killed run never leaves a half shard.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

__all__ = ["FORMATS", "INDEX_FILE", "ImageIndex", "ImageIndexError", "read_index", "read_manifest", "read_shard",
           "shard_path", "write_json_atomic", "write_shard"]

FORMATS = {"safetensors": ".safetensors", "parquet": ".parquet"}
INDEX_FILE = "index.json"


class ImageIndexError(ValueError):
    """An index folder that cannot be used; the message names the folder or file."""


def write_json_atomic(path: Path, value) -> None:
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)


def read_manifest(folder) -> dict:
    path = Path(folder) / INDEX_FILE
    if not path.is_file():
        raise ImageIndexError(f"{folder}: no {INDEX_FILE}; not an index written by python -m alta_hf.evaluation.embed")
    return json.loads(path.read_text(encoding="utf-8"))


def shard_path(folder, number: int, file_format: str) -> Path:
    return Path(folder) / f"shard-{number:05d}{FORMATS[file_format]}"


def write_shard(path: Path, embeddings: torch.Tensor, indices: torch.Tensor, paths: list[str], failures: list[dict]) -> None:
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({
            "path": pa.array(paths, pa.string()),
            "index": pa.array(indices.tolist(), pa.int64()),
            "embedding": pa.array(embeddings.float().tolist(), pa.list_(pa.float32())),
        }).replace_schema_metadata({"alta_failures": json.dumps(failures)})
        pq.write_table(table, temporary)
    else:
        save_file(
            {"embeddings": embeddings.float().contiguous(), "indices": indices.long().contiguous()}, str(temporary),
            metadata={"paths": json.dumps(paths), "failures": json.dumps(failures)},
        )
    temporary.replace(path)


def read_shard(path: Path) -> tuple[torch.Tensor, torch.Tensor, list[str], list[dict]]:
    """`(embeddings, indices, paths, failures)` of one shard; raises `ImageIndexError` naming a damaged file."""
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            failures = json.loads((table.schema.metadata or {}).get(b"alta_failures", b"[]"))
            vectors = table.column("embedding").to_pylist()
            embeddings = torch.tensor(vectors, dtype=torch.float32) if vectors else torch.empty(0, 0)
            return embeddings, torch.tensor(table.column("index").to_pylist(), dtype=torch.long), \
                table.column("path").to_pylist(), failures
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            embeddings, indices = handle.get_tensor("embeddings"), handle.get_tensor("indices")
        return embeddings, indices, json.loads(metadata["paths"]), json.loads(metadata["failures"])
    except (OSError, ValueError, KeyError, SafetensorError, ImportError) as error:
        raise ImageIndexError(f"{path}: unreadable index shard ({type(error).__name__}: {error})") from error
    except Exception as error:  # pyarrow raises its own ArrowInvalid on a damaged file
        if type(error).__module__.startswith("pyarrow"):
            raise ImageIndexError(f"{path}: unreadable index shard ({error})") from error
        raise


@dataclass
class ImageIndex:
    embeddings: torch.Tensor  # (num_images, projection_dim), unnormalised
    paths: list[str]
    manifest: dict
    failures: list[dict]


def read_index(folder) -> ImageIndex:
    """All shards of an index folder, in input order."""
    manifest = read_manifest(folder)
    chunks, paths, failures = [], [], []
    for number in range(manifest["num_shards"]):
        path = shard_path(folder, number, manifest["format"])
        if not path.is_file():
            raise ImageIndexError(f"{path}: shard missing; the embedding run did not finish (run it again to resume)")
        embeddings, _, shard_paths, shard_failures = read_shard(path)
        if len(shard_paths):
            chunks.append(embeddings)
        paths.extend(shard_paths)
        failures.extend(shard_failures)
    if not chunks:
        raise ImageIndexError(f"{folder}: the index holds no embedded image")
    return ImageIndex(torch.cat(chunks), paths, manifest, failures)
