"""Processing throughput on full-size (MIMIC-CXR-JPG-like, ~2500x3000) JPEGs.

1. Training samples (4 views + the 448 reconstruction target, augmentation, report, MLM), measured alternately in
   one run: this package with draft (reduced DCT) decoding; the same with full decoding then resize; and the naive
   recipe of the official pipeline (full decode, convert to RGB, resize/crop/augment the RGB image, then gray).
2. Evaluation preprocessing (one image -> 224 tensor), draft vs full decoding vs the official RGB recipe.

    python -m benchmarks.bench_processing [--samples 12] [--rounds 3]
"""

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageOps
from transformers import BertTokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]

from alta_hf.processing import AltaImageProcessor, AltaProcessor, apply_augmentation, draw_augmentation
from alta_hf.processing.image_processing_alta import _center_crop, _resize_shorter_side

FIXTURES = REPO_ROOT / "tests" / "fixtures"  # real radiographs and the tiny CXR-BERT vocabulary
REPORT = ("Heart size is mildly enlarged. There is a small left pleural effusion. No pneumothorax. "
          "Mild pulmonary vascular congestion. Compared to the prior study the effusion is new.")


def make_full_size_jpegs(folder: Path) -> list[Path]:
    """Four distinct 2544x3056 JPEGs (the size of a MIMIC PA view) made from a real MIMIC-style radiograph."""
    source = Image.open(FIXTURES / "realdata" / "derived" / "rg1_mimic_cxr_jpg_style.jpg").convert("L")
    variants = [source, ImageOps.mirror(source), source.rotate(3, expand=False), ImageOps.autocontrast(source, cutoff=2)]
    paths = []
    for index, image in enumerate(variants):
        path = folder / f"view{index}.jpg"
        image.resize((2544, 3056), Image.Resampling.BICUBIC).save(path, quality=95)
        paths.append(path)
    return paths


class OfficialRecipe:
    """The official pipeline's per-image work on PIL: decode, convert("RGB"), resize + crop + augment in RGB, gray."""

    def __init__(self, processor: AltaProcessor):
        self.processor = processor
        self.image_processor = processor.image_processor

    def image(self, path, shorter, crop, draw=None):
        image = Image.open(path).convert("RGB")
        image = _center_crop(_resize_shorter_side(image, shorter, Image.Resampling.BICUBIC), crop, crop)
        if draw is not None:
            image = apply_augmentation(image, draw, self.image_processor.augmentation_settings)
        return self.image_processor._to_tensor(image.convert("L"))

    def preprocess_study(self, frontal, lateral, prior_frontal, prior_lateral, report, generator):
        settings = self.image_processor.augmentation_settings
        draws = [draw_augmentation(settings, generator), draw_augmentation(settings, generator)]
        self.image(frontal, 512, 448, draws[0])
        for path, draw in ((lateral, draws[1]), (prior_frontal, draws[0]), (prior_lateral, draws[1])):
            self.image(path, 256, 224, draw)
        self.processor.tokenizer(report, padding="max_length", max_length=128, truncation=True)

    def preprocess_one(self, path):
        return self.image(path, 256, 224)


def time_samples(processor: AltaProcessor, views: list[Path], count: int) -> float:
    start = time.perf_counter()
    for index in range(count):
        processor.preprocess_study(*views, report=REPORT, generator=torch.Generator().manual_seed(index))
    return count / (time.perf_counter() - start)


def time_eval(image_processor: AltaImageProcessor, views: list[Path], count: int) -> float:
    start = time.perf_counter()
    for index in range(count):
        image_processor.preprocess_one(views[index % len(views)])
    return count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=12, help="training samples per timing")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median reported)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = BertTokenizer(vocab=str(FIXTURES / "golden_tiny/BiomedVLP-CXR-BERT-specialized/vocab.txt"), model_max_length=128)
    fast = AltaProcessor(AltaImageProcessor(draft_decoding=True), tokenizer)
    naive = AltaProcessor(AltaImageProcessor(draft_decoding=False), tokenizer)
    with tempfile.TemporaryDirectory() as folder:
        views = make_full_size_jpegs(Path(folder))
        file_megabytes = views[0].stat().st_size / 1e6
        official = OfficialRecipe(naive)
        variants = {"draft": fast, "full decode": naive, "official RGB recipe": official}
        for variant in variants.values():
            time_samples(variant, views, 1)  # warm-up
        train = {name: [] for name in variants}
        evaluation = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, variant in variants.items():
                train[name].append(time_samples(variant, views, args.samples))
                image_processor = getattr(variant, "image_processor", None)
                evaluation[name].append(time_eval(variant if name == "official RGB recipe" else image_processor,
                                                  views, 4 * args.samples))
    median = statistics.median
    print(f"CPU: {platform.processor() or platform.machine()}, torch threads 1, {args.rounds} alternating rounds, "
          f"{args.samples} samples each; files {file_megabytes:.1f} MB, 2544x3056")
    for title, table in (("training samples/s (4 views + 448 target)", train), ("evaluation images/s", evaluation)):
        speeds = {name: median(values) for name, values in table.items()}
        print(f"{title}: " + ", ".join(f"{name} {value:.2f}" for name, value in speeds.items()))
        print(f"  draft vs full decode {speeds['draft'] / speeds['full decode']:.2f}x, "
              f"draft vs official RGB recipe {speeds['draft'] / speeds['official RGB recipe']:.2f}x")


if __name__ == "__main__":
    main()
