"""Training samples/s from pre-resized image shards vs from full-size (MIMIC-CXR-JPG-like, 2544x3056) JPEGs.

A pre-training dataset of `--studies` studies (4 views each) referencing distinct full-size JPEGs is built in the
builder's format, sharded with `dataset_scripts.shard_images` (PNG and JPEG shards), and then read the way the
training loader reads it: `training.data.StudyDataset` (row access, image decoding, `AltaProcessor.preprocess_study`
with augmentation, report and MLM). The three sources are timed alternately in one process; the fastest round of
each is reported next to the median, as other jobs share the machine. Also reported:
bytes on disk per image (source file, stored shard image, and the whole sharded dataset per embedded view).

    python -m benchmarks.bench_shards [--studies 12] [--rounds 3]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import pandas as pd
import torch
from PIL import Image, ImageOps
from transformers import BertTokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]

from alta_hf.dataset_scripts.common import frame_to_dataset, save_dataset
from alta_hf.dataset_scripts.mimic_cxr import PRETRAINING_FEATURES
from alta_hf.dataset_scripts.shard_images import ShardOptions, encode_image, shard_images, shrink_radiograph
from alta_hf.processing import AltaImageProcessor, AltaProcessor
from alta_hf.training.data import StudyDataset, load_pretraining_split

from benchmarks.bench_dataset_mimic import cpu_name

FIXTURES = REPO_ROOT / "tests" / "fixtures"  # real radiographs and the tiny CXR-BERT vocabulary
FULL_SIZE = (2544, 3056)  # a MIMIC-CXR-JPG PA view
REPORT = ("Heart size is mildly enlarged. There is a small left pleural effusion. No pneumothorax. "
          "Mild pulmonary vascular congestion. Compared to the prior study the effusion is new.")


def make_source(folder: Path, studies: int) -> Path:
    """Full-size JPEGs (quality 95) made from the real MIMIC-style radiograph, 4 views per study, and the dataset."""
    base = Image.open(FIXTURES / "realdata" / "derived" / "rg1_mimic_cxr_jpg_style.jpg").convert("L")
    root = folder / "mimic"
    (root / "files").mkdir(parents=True)
    rows = []
    for study in range(studies):
        paths = []
        for view in range(4):
            image = base.rotate(2 * view - 3 + study % 3)
            image = ImageOps.mirror(image) if (study + view) % 2 else image
            path = f"files/s{study}_{view}.jpg"
            image.resize(FULL_SIZE, Image.Resampling.BICUBIC).save(root / path, quality=95)
            paths.append(path)
        rows.append({"subject_id": study, "study_id": 50000000 + study, "frontal_path": paths[0], "lateral_path": paths[1],
                     "prior_study_id": 40000000 + study, "prior_frontal_path": paths[2], "prior_lateral_path": paths[3],
                     "report": REPORT})
    frame = pd.DataFrame(rows)
    frame["prior_study_id"] = frame["prior_study_id"].astype("Int64")
    dataset = datasets.DatasetDict({"train": frame_to_dataset(frame, PRETRAINING_FEATURES, "train", "bench")})
    return save_dataset(dataset, folder / "pretrain", {"kind": "pretraining", "image_root": str(root)}, {})


def samples_per_second(dataset: StudyDataset) -> float:
    start = time.perf_counter()
    for index in range(len(dataset)):
        dataset[index]
    return len(dataset) / (time.perf_counter() - start)


def folder_bytes(folder: Path, pattern: str) -> int:
    return sum(path.stat().st_size for path in folder.rglob(pattern))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=12, help="studies (4 distinct full-size JPEGs each)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (best and median reported)")
    parser.add_argument("--num-proc", type=int, default=None, help="sharding processes (default: all cores)")
    args = parser.parse_args()
    tokenizer = BertTokenizer(vocab=str(FIXTURES / "golden_tiny/BiomedVLP-CXR-BERT-specialized/vocab.txt"), model_max_length=128)
    processor = AltaProcessor(AltaImageProcessor(), tokenizer)
    size = processor.image_processor.reconstruction_size
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source_dir = make_source(folder, args.studies)
        sources = {"full-size JPEG files": source_dir}
        sharding = {}
        for image_format in ("png", "jpeg"):
            shard_images(source_dir, folder / f"shards_{image_format}", size, num_proc=args.num_proc,
                         shard_size=max(1, args.studies), image_format=image_format)
            sources[f"shards ({image_format})"] = folder / f"shards_{image_format}"
            # the per-image work of a sharding process (decode at reduced scale, resize, encode), one core
            files, options = sorted((folder / "mimic" / "files").glob("*.jpg")), ShardOptions(size, image_format)
            start = time.perf_counter()
            for file in files:
                encode_image(shrink_radiograph(file, size), options)
            sharding[image_format] = (time.perf_counter() - start) / len(files)
        torch.set_num_threads(1)  # one DataLoader worker
        readers = {}
        for name, path in sources.items():
            rows, image_root, _ = load_pretraining_split(str(path), "train")
            readers[name] = StudyDataset(rows, processor, image_root, seed=0)
            readers[name][0]  # warm-up
        speeds = {name: [] for name in readers}
        for _ in range(args.rounds):
            for name, reader in readers.items():
                speeds[name].append(samples_per_second(reader))
        images = 4 * args.studies
        source_bytes = folder_bytes(folder / "mimic", "*.jpg") / images
        stored = {fmt: datasets.load_from_disk(str(folder / f"shards_{fmt}"))["train"] for fmt in ("png", "jpeg")}
        shard_bytes = {fmt: folder_bytes(folder / f"shards_{fmt}", "*.arrow") / images for fmt in stored}
        shape = stored["png"][0]["frontal_image"].size

    best = {name: max(values) for name, values in speeds.items()}
    median = {name: statistics.median(values) for name, values in speeds.items()}
    base = "full-size JPEG files"
    print(f"CPU: {cpu_name()}; torch threads 1 (one loader worker); {args.studies} studies x 4 views, {args.rounds} "
          f"alternating rounds; source {FULL_SIZE[0]}x{FULL_SIZE[1]} JPEG q95; shards {shape[0]}x{shape[1]}")
    print("| source | samples/s (best) | vs full-size files (best) | samples/s (median) | vs full-size (median) "
          "| bytes on disk per image |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in speeds:
        per_image = source_bytes if name == base else shard_bytes[name.split("(")[1].rstrip(")")]
        print(f"| {name} | {best[name]:.2f} | {best[name] / best[base]:.2f}x | {median[name]:.2f} "
              f"| {median[name] / median[base]:.2f}x | {per_image / 1e3:,.0f} kB |")
    for fmt, seconds in sharding.items():
        print(f"sharding work per image ({fmt}, one core): {1e3 * seconds:.0f} ms")


if __name__ == "__main__":
    main()
