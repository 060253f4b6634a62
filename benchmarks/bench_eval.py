"""Evaluation throughput and the cost of the CheXpert 5x200 prompt ensemble.

    python -m benchmarks.bench_eval                 # base-size ALTA-like stand-in (random ViTMAE-B + BERT-B)
    python -m benchmarks.bench_eval --model DIR     # a saved ALTA model + processor instead

Measures, side by side in one run:
1. images/s of decoding + preprocessing alone, and through `evaluation.embed_images` (decode +
   preprocess + forward), on a full-resolution MIMIC-style JPEG (full decode and `--draft-decode`)
   and on a 512 px PNG, and the forward pass alone;
2. the 5x200 zero-shot prompt ensemble (489 prompts, 128 tokens as the protocol pads them) against
   padding to the longest prompt (same class embeddings up to float rounding), expressed in images
   (by default every 10th prompt is embedded and the time scaled to 489: the cost is linear);
3. `run_task` on an RSNA-layout folder: first run vs. the cached re-run.
Prints a Markdown table for benchmarks/RESULTS.md.
"""

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

from alta_hf.evaluation import embed_images, embed_texts, mean_class_embeddings, run_task

FIXTURES = REPO / "tests" / "fixtures"  # real radiographs and the tiny CXR-BERT vocabulary
FULL_RES_JPEG = FIXTURES / "realdata" / "derived" / "rg1_mimic_cxr_jpg_style.jpg"
PNG_512 = FIXTURES / "realdata" / "images" / "nih_cxr14" / "00000001_000.png"
# Prompts per class of the 5x200 ensemble (docs/evaluation.md): 210 + 15 + 192 + 18 + 54 = 489.
PROMPTS_PER_CLASS = (210, 15, 192, 18, 54)
EMBEDDING_DIM = 128  # ALTA's projection size, for the stand-in only
PROMPT_WORDS = ("mild minimal small large stable increased decreased left right bilateral basilar patchy subsegmental "
                "linear atelectasis cardiomegaly consolidation edema pleural effusion at the lung base zone lobe upper lower").split()


class AltaLikeStandIn(torch.nn.Module):
    """Random base-size towers with ALTA's inference interface (ViT-B/16 at 224 px, BERT-base)."""

    def __init__(self, vocab_size: int):
        super().__init__()
        from transformers import BertConfig, BertModel, ViTMAEConfig, ViTMAEModel

        self.vision = ViTMAEModel(ViTMAEConfig(mask_ratio=0.0))
        self.text = BertModel(BertConfig(vocab_size=vocab_size), add_pooling_layer=False)
        self.visual_projection = torch.nn.Linear(self.vision.config.hidden_size, EMBEDDING_DIM)
        self.text_projection = torch.nn.Linear(self.text.config.hidden_size, EMBEDDING_DIM)
        self.config = SimpleNamespace(text_config=self.text.config)

    def get_image_features(self, pixel_values):
        patches = self.vision.embeddings.patch_embeddings.num_patches
        noise = torch.arange(patches, dtype=torch.float32).expand(pixel_values.shape[0], patches)  # keep patch order
        return self.visual_projection(self.vision(pixel_values, noise=noise).last_hidden_state[:, 0])

    def get_text_features(self, input_ids, attention_mask):
        return self.text_projection(self.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0])


class StandInProcessor:
    """ALTA's evaluation transform (shorter side 256 bicubic, centre crop 224, normalise) + a BERT tokenizer."""

    resize, crop, mean, std = 256, 224, 0.4785, 0.2834

    def __init__(self):
        from transformers import BertTokenizer

        # One token per word, as CXR-BERT's radiology vocabulary mostly gives for these words.
        vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *PROMPT_WORDS, "there", "is", "no", "pneumonia"]
        self.tokenizer = BertTokenizer(vocab={word: index for index, word in enumerate(vocabulary)})
        self.image_processor = SimpleNamespace(size={"shortest_edge": self.resize})

    def _image(self, image):
        image = image.convert("L")
        scale = self.resize / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
        left, top = (image.width - self.crop) // 2, (image.height - self.crop) // 2
        pixels = np.asarray(image.crop((left, top, left + self.crop, top + self.crop)), dtype=np.float32) / 255
        return torch.from_numpy((pixels - self.mean) / self.std)[None].expand(3, -1, -1)

    def __call__(self, images=None, text=None, return_tensors="pt", **kwargs):
        if images is not None:
            return {"pixel_values": torch.stack([self._image(image) for image in images])}
        return self.tokenizer(text, return_tensors=return_tensors, **kwargs)


def install_loader_if_missing():
    """Use processing.load_radiograph when it exists; otherwise a Pillow stand-in with draft decoding."""
    from alta_hf import processing

    if hasattr(processing, "load_radiograph"):
        return "alta_hf.processing.load_radiograph"

    class LoadError(ValueError):
        pass

    def load_radiograph(source, *, min_size=None):
        try:
            image = Image.open(source)
            if min_size:
                image.draft("L", (min_size, min_size))
            return image.convert("L")
        except OSError as error:
            raise LoadError(f"{source}: {error}") from error

    processing.load_radiograph, processing.RadiographLoadError = load_radiograph, LoadError
    return "Pillow stand-in (processing.load_radiograph not merged yet)"


def synthetic_prompts(rng) -> tuple[list[str], list[int]]:
    """489 prompts of 2-14 words (GLoRIA-like lengths; not GLoRIA's phrases)."""
    prompts, groups = [], []
    for label, count in enumerate(PROMPTS_PER_CLASS):
        for _ in range(count):
            prompts.append(" ".join(rng.choice(PROMPT_WORDS, size=rng.integers(2, 15))))
            groups.append(label)
    return prompts, groups


def timed(function, repeats=1):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


SOURCES = (("full-res JPEG 1841x1955, full decode", FULL_RES_JPEG, False),
           ("full-res JPEG 1841x1955, --draft-decode", FULL_RES_JPEG, True),
           ("512 px PNG", PNG_512, False))


def decode_throughput(processor, count) -> list[tuple[str, float]]:
    """Images/s of loading + preprocessing alone (what bounds a GPU run)."""
    from alta_hf import processing

    rows = []
    for label, path, draft in SOURCES:
        min_size = processor.image_processor.size["shortest_edge"] if draft else None
        seconds, _ = timed(lambda: [processor(images=[processing.load_radiograph(str(path), min_size=min_size)]) for _ in range(count)], 2)
        rows.append((label, count / seconds))
    return rows


def image_throughput(model, processor, count, batch_size) -> list[tuple[str, float]]:
    rows = []
    for label, path, draft in SOURCES:
        seconds, _ = timed(lambda: embed_images(model, processor, [str(path)] * count, batch_size=batch_size, draft_decode=draft, progress=False))
        rows.append((label, count / seconds))
    pixels = processor(images=[Image.open(PNG_512)] * batch_size)["pixel_values"]
    with torch.no_grad():
        seconds, _ = timed(lambda: [model.get_image_features(pixel_values=pixels) for _ in range(max(1, count // batch_size))])
    rows.append(("forward pass only (preprocessed)", max(1, count // batch_size) * batch_size / seconds))
    return rows


def prompt_ensemble(model, processor, batch_size, sample_every) -> dict:
    """Embeds every `sample_every`-th prompt both ways; seconds are scaled to the full 489 (the cost is linear)."""
    all_prompts, all_groups = synthetic_prompts(np.random.default_rng(0))
    prompts, groups = all_prompts[::sample_every], all_groups[::sample_every]
    scale = len(all_prompts) / len(prompts)
    padded_seconds, padded = timed(lambda: embed_texts(model, processor, prompts, max_length=128, batch_size=batch_size, progress=False))
    def embed_padded_to_longest():
        chunks = []
        with torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                batch = processor(text=prompts[start:start + batch_size], padding="longest", return_tensors="pt")
                chunks.append(model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]))
        return torch.cat(chunks)

    longest_seconds, longest = timed(embed_padded_to_longest)
    encoded = processor(text=prompts, padding="longest")
    difference = (mean_class_embeddings(padded, groups, 5) - mean_class_embeddings(longest, groups, 5)).abs().max().item()
    lengths = encoded["attention_mask"].sum(dim=1).tolist()
    return {"prompts": len(all_prompts), "sampled": len(prompts), "padded_seconds": padded_seconds * scale, "longest_seconds": longest_seconds * scale,
            "max_class_embedding_difference": difference, "median_tokens": float(np.median(lengths)), "max_tokens": max(lengths)}


def cached_rerun(model, processor, count, batch_size) -> tuple[float, float, dict]:
    import datasets

    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "rsna"
        labels = [i % 2 for i in range(count)]
        datasets.DatasetDict({"test": datasets.Dataset.from_dict({"image_path": [PNG_512.name] * count, "label": labels})}).save_to_disk(str(data))
        (data / "alta_dataset.json").write_text(json.dumps({
            "kind": "rsna", "image_root": str(PNG_512.parent), "class_names": ["no pneumonia", "pneumonia"],
            "class_prompts": {"no pneumonia": ["There is no pneumonia"], "pneumonia": ["There is pneumonia"]}}))
        run = lambda: run_task("rsna", model, processor, data, batch_size=batch_size, cache_dir=Path(scratch) / "cache", progress=False)  # noqa: E731
        first, _ = timed(run)
        second, result = timed(run)
    return first, second, result["embedding"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="saved ALTA model folder (default: the random base-size stand-in)")
    parser.add_argument("--images", type=int, default=16, help="images per throughput measurement")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompt-sample", type=int, default=10, help="embed every N-th prompt and scale to 489 (1 = all)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    loader = install_loader_if_missing()
    if args.model:
        from alta_hf.evaluation.loading import load_model_and_processor

        model, processor, _ = load_model_and_processor(args.model)
        name = args.model
    else:
        processor = StandInProcessor()
        model, name = AltaLikeStandIn(len(processor.tokenizer)).eval(), "random ViTMAE-B/16 + BERT-base stand-in"
    parameters = sum(p.numel() for p in model.parameters())
    print(f"model: {name} ({parameters / 1e6:.1f} M parameters); loader: {loader}")
    print(f"CPU: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, torch {torch.__version__}\n")

    print(f"| decode + preprocess only, one process ({args.images} images) | images/s |\n|---|---|")
    for label, rate in decode_throughput(processor, args.images):
        print(f"| {label} | {rate:.1f} |")

    throughput = image_throughput(model, processor, args.images, args.batch_size)
    print()
    print(f"| images embedded (batch {args.batch_size}, {args.images} images) | images/s |\n|---|---|")
    for label, rate in throughput:
        print(f"| {label} | {rate:.2f} |")

    ensemble = prompt_ensemble(model, processor, 64, args.prompt_sample)
    per_image = 1 / throughput[-1][1]
    print(f"\n| 5x200 prompt ensemble ({ensemble['prompts']} prompts; {ensemble['sampled']} embedded and scaled; median "
          f"{ensemble['median_tokens']:.0f} / max {ensemble['max_tokens']} tokens) | seconds | = images embedded (forward only) |\n|---|---|---|")
    print(f"| padded to 128 tokens (protocol) | {ensemble['padded_seconds']:.2f} | {ensemble['padded_seconds'] / per_image:.0f} |")
    print(f"| padded to the longest prompt | {ensemble['longest_seconds']:.2f} | {ensemble['longest_seconds'] / per_image:.0f} |")
    print(f"\nmax |difference| of the L2-normalised class embeddings between the two: {ensemble['max_class_embedding_difference']:.2e}")

    count = max(20, args.images)
    first, second, stats = cached_rerun(model, processor, count, args.batch_size)
    print(f"\n| run_task('rsna') on {count} images | seconds |\n|---|---|\n| first run | {first:.2f} |\n| cached re-run | {second:.3f} |")
    print(f"(re-run embedding stats: {stats})")


if __name__ == "__main__":
    main()
