"""Embed a whole archive of radiographs once, into an index that `python -m alta_hf.evaluation.search` searches by text.

    python -m alta_hf.evaluation.embed --model M --images DIR|DATASET --output OUT [--format safetensors|parquet]
        [--shard-size 1024] [--batch-size 32] [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--num-workers 2]

`DIR` is searched recursively for JPEG, PNG and DICOM files (`.jpg .jpeg .png .dcm .dicom`, any case), in sorted
order; `DATASET` is a dataset folder of `dataset_scripts` (its `image_path`/`frontal_path` column, every split).
The embeddings are ALTA's projected image features (`get_image_features`, unnormalised), with the absolute file
paths, in shards (evaluation/image_index.py). Run it again after an interruption: finished shards are kept, the
others done. Unreadable files are skipped and counted (listed in the shards and in `index.json`).
"""

import argparse
import logging
import os
import sys
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "list_images", "main"]

logger = logging.getLogger("alta_hf.evaluation.embed")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".dcm", ".dicom"}
_DATASET_COLUMNS = ("image_path", "frontal_path")
_DTYPES = ("float32", "bfloat16", "float16")


def list_images(source) -> list[str]:
    """Absolute paths of the images of a folder (recursive, sorted) or of a `dataset_scripts` dataset folder."""
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: not a folder of images nor a dataset folder")
    if (source / "alta_dataset.json").is_file():
        import datasets

        from alta_hf.dataset_scripts.common import load_dataset_meta

        root = Path(load_dataset_meta(source)["image_root"])
        loaded = datasets.load_from_disk(str(source))
        splits = loaded.values() if isinstance(loaded, datasets.DatasetDict) else [loaded]
        seen, paths = set(), []
        for split in splits:
            column = next((c for c in _DATASET_COLUMNS if c in split.column_names), None)
            if column is None:
                raise ValueError(f"{source}: a split has none of the columns {_DATASET_COLUMNS}")
            for relative in split[column]:
                if relative and relative not in seen:
                    seen.add(relative)
                    paths.append(str((root / relative).absolute()))
        return paths
    found = []
    for folder, _, files in os.walk(source):
        found.extend(Path(folder, name).absolute() for name in files if Path(name).suffix.lower() in IMAGE_SUFFIXES)
    return [str(path) for path in sorted(found)]


def _parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m alta_hf.evaluation.embed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="ALTA model folder or Hub repo id")
    parser.add_argument("--images", required=True, help="folder of images (recursive) or dataset folder")
    parser.add_argument("--output", required=True, help="index folder (created; resumed when it exists)")
    parser.add_argument("--format", choices=["safetensors", "parquet"], default="safetensors")
    parser.add_argument("--shard-size", type=int, default=1024, help="images per shard (the unit of resumption)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", choices=_DTYPES, default="float32", help="model weights and inputs")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers decoding images")
    parser.add_argument("--draft-decode", action="store_true", help="faster JPEG decoding (not bit-identical)")
    args = parser.parse_args(argv)
    if args.shard_size < 1 or args.batch_size < 1:
        parser.error("--shard-size and --batch-size must be positive")
    return args


def _manifest(args, paths: list[str], model_dir: Path) -> dict:
    from alta_hf.evaluation.cache import fingerprint, fingerprint_model_dir

    return {
        "format": args.format,
        "model": str(Path(model_dir).absolute()),
        "model_fingerprint": fingerprint_model_dir(model_dir),
        "source": str(Path(args.images).absolute()),
        "num_files": len(paths),
        "files_fingerprint": fingerprint(paths),
        "shard_size": args.shard_size,
        "num_shards": -(-len(paths) // args.shard_size),
        "dtype": args.dtype,
        "embedding": "get_image_features (projected image [CLS], unnormalised)",
    }


def _check_resumable(output: Path, manifest: dict) -> None:
    from alta_hf.evaluation.image_index import read_manifest

    previous = read_manifest(output)
    keys = ("format", "model_fingerprint", "files_fingerprint", "shard_size", "dtype")
    changed = [key for key in keys if previous.get(key) != manifest[key]]
    if changed:
        raise SystemExit(
            f"{output} holds an index made with other {', '.join(changed)}; pass a new --output to start afresh"
        )


def main(argv=None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch
    from tqdm.auto import tqdm

    from alta_hf.evaluation.embedding import embed_images
    from alta_hf.evaluation.image_index import INDEX_FILE, ImageIndexError, read_shard, shard_path, write_json_atomic, write_shard
    from alta_hf.evaluation.loading import load_model_and_processor

    paths = list_images(args.images)
    if not paths:
        raise SystemExit(f"{args.images}: no JPEG, PNG or DICOM file found")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, processor, model_dir = load_model_and_processor(args.model, dtype=getattr(torch, args.dtype))
    output = Path(args.output)
    manifest = _manifest(args, paths, model_dir)
    if (output / INDEX_FILE).is_file():
        _check_resumable(output, manifest)
    output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output / INDEX_FILE, {**manifest, "complete": False})

    embedded = skipped = reused = 0
    bar = tqdm(total=len(paths), desc="embedding", unit="img")
    with bar:
        for number in range(manifest["num_shards"]):
            start = number * args.shard_size
            shard_files = paths[start : start + args.shard_size]
            path = shard_path(output, number, args.format)
            if path.is_file():
                try:
                    _, indices, _, failures = read_shard(path)
                    reused += 1
                    embedded, skipped = embedded + len(indices), skipped + len(failures)
                    bar.update(len(shard_files))
                    continue
                except ImageIndexError as error:  # damaged (e.g. the disk filled up): redo it
                    logger.warning("%s; embedding the shard again", error)
            result = embed_images(
                model, processor, shard_files, batch_size=args.batch_size, device=device, num_workers=args.num_workers,
                draft_decode=args.draft_decode, progress=False,
            )
            kept = [shard_files[i] for i in result.indices.tolist()]
            failures = [{"path": shard_files[f["index"]], "error": f["error"]} for f in result.failures]
            write_shard(path, result.embeddings, result.indices + start, kept, failures)
            embedded, skipped = embedded + len(kept), skipped + len(failures)
            bar.update(len(shard_files))
    write_json_atomic(output / INDEX_FILE, {**manifest, "complete": True, "embedded": embedded, "skipped": skipped})
    print(f"{embedded} images embedded, {skipped} unreadable skipped, {reused} of {manifest['num_shards']} shards "
          f"reused -> {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
