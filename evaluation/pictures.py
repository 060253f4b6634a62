"""Interpretability pictures of an ALTA model: word <-> region attention heat maps and MRM reconstructions.

    from alta_hf.evaluation.pictures import word_attention, save_attention_pictures, reconstruct, save_reconstruction_picture

    attention = word_attention(model, processor, "cxr.png", "Small left pleural effusion.")
    attention.words                          # ['Small', 'left', 'pleural', 'effusion', '.']
    attention.word_map("effusion")           # (rows, cols) attention over the patch grid, sums to 1
    attention.phrase_map("pleural effusion") # mean of the two words' maps
    save_attention_pictures(model, processor, "cxr.png", report, "out/", phrase="pleural effusion")

    result = reconstruct(pretraining_model, processor, "cxr.png", seed=0)
    save_reconstruction_picture(pretraining_model, processor, "cxr.png", "out/", seed=0)

Command line (a saved `AltaForPreTraining` folder with its processor or tokenizer):

    python -m alta_hf.evaluation.pictures attention --model DIR --image cxr.dcm --report "..." [--words W ... | --phrase P] \
        --output-dir OUT
    python -m alta_hf.evaluation.pictures reconstruction --model DIR --image cxr.jpg --output-dir OUT [--seed 0]

Attention is the one the local loss uses (`word_region_attention`): local features of every patch of the
unmasked image against the local features of the report's word pieces, with the model's learnt temperature t1.
A whole word's map is the mean of its word pieces' maps; a phrase's map the mean of its words' maps.

The model sees only the centre crop of the evaluation transform. Attention pictures show the WHOLE radiograph
(same aspect as the input) with the heat map drawn over the crop region that the model saw; the rest of the
image is left uncoloured. Reconstruction pictures show the square reconstruction target (the training
geometry without augmentation), so they are square panels.
"""

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from alta_hf.modeling_alta.losses_alta import _NORM_PIX_EPS, patchify, word_region_attention
from alta_hf.processing import RadiographLoadError, load_radiograph

__all__ = [
    "MASKED_PATCH_COLOR",
    "PictureError",
    "Reconstruction",
    "WordAttention",
    "crop_box",
    "load_pretraining_model",
    "main",
    "reconstruct",
    "reconstruction_panel_boxes",
    "render_attention",
    "render_reconstruction",
    "save_attention_pictures",
    "save_reconstruction_picture",
    "word_attention",
]

# Fill of a removed patch in the "masked input" panel: a muted blue no grayscale radiograph pixel can have.
MASKED_PATCH_COLOR = (96, 96, 160)
# Layout of the reconstruction picture: a caption strip above three panels separated by gaps.
_CAPTION_HEIGHT = 24
_PANEL_GAP = 8
_BACKGROUND = (255, 255, 255)


class PictureError(ValueError):
    """A picture cannot be made from the given inputs (unknown word or phrase, a model without decoder weights...)."""


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _save_png(image: Image.Image, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    image.save(temporary, format="PNG")
    os.replace(temporary, path)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "-", text).strip("-").lower() or "word"


# --------------------------------------------------------------------------------------------------------------
# Word <-> region attention
# --------------------------------------------------------------------------------------------------------------


def crop_box(image_size: tuple[int, int], image_processor) -> tuple[float, float, float, float]:
    """The region `(left, top, right, bottom)`, in the pixels of an image of `image_size = (width, height)`, that the
    evaluation transform of `image_processor` (shorter side resized, centre crop) keeps: the area the model sees."""
    width, height = image_size
    resized_width, resized_height = width, height
    if image_processor.do_resize:
        shorter = image_processor.size.shortest_edge
        # the processor's own arithmetic: the longer side is truncated, not rounded
        if width <= height:
            resized_width, resized_height = shorter, int(shorter * height / width)
        else:
            resized_width, resized_height = int(shorter * width / height), shorter
    left, top, right, bottom = 0, 0, resized_width, resized_height
    if image_processor.do_center_crop:
        crop_width, crop_height = image_processor.crop_size.width, image_processor.crop_size.height
        top = int(round((resized_height - crop_height) / 2.0))
        left = int(round((resized_width - crop_width) / 2.0))
        right, bottom = left + crop_width, top + crop_height
    scale_x, scale_y = width / resized_width, height / resized_height
    return (left * scale_x, top * scale_y, right * scale_x, bottom * scale_y)


@dataclass
class WordAttention:
    """
    Attention of the words of one report over the patch grid of one radiograph.

    Attributes:
        report (`str`): the report as given.
        words (`list[str]`): the report's whole words in order (the tokenizer's pre-tokenisation: punctuation marks
            are words of their own), cut where the tokenizer truncates the report.
        spans (`list[tuple[int, int]]`): character span of each word in `report`.
        maps (`np.ndarray` of shape `(num_words, rows, cols)`): each word's attention over the patches (row-major
            patch grid); every map sums to 1. A word of several word pieces gets the mean of their maps.
        image (`PIL.Image.Image`): the radiograph as loaded (8-bit gray, full size).
        crop_box (`tuple[float, float, float, float]`): the region of `image` the model saw (see [`crop_box`]).
    """

    report: str
    words: list[str]
    spans: list[tuple[int, int]]
    maps: np.ndarray
    image: Image.Image
    crop_box: tuple[float, float, float, float]

    def word_index(self, word: str) -> int:
        """Index of the first word equal to `word` (case-insensitive)."""
        wanted = word.strip().lower()
        for index, candidate in enumerate(self.words):
            if candidate.lower() == wanted:
                return index
        raise PictureError(f"word {word!r} is not in the report; its words are {self.words}")

    def phrase_indices(self, phrase: str) -> list[int]:
        """Indices of the words of the first occurrence of `phrase` in the report (case-insensitive, any run of
        whitespace between its words); the phrase must start and end on word boundaries."""
        parts = phrase.split()
        if not parts:
            raise PictureError("the phrase is empty")
        pattern = re.compile(r"\s+".join(re.escape(part) for part in parts), re.IGNORECASE)
        starts = {start: index for index, (start, _) in enumerate(self.spans)}
        ends = {end: index for index, (_, end) in enumerate(self.spans)}
        for match in pattern.finditer(self.report):
            if match.start() in starts and match.end() in ends:
                return list(range(starts[match.start()], ends[match.end()] + 1))
        raise PictureError(f"phrase {phrase!r} is not a run of whole words of the report; its words are {self.words}")

    def word_map(self, word: str | int) -> np.ndarray:
        """`(rows, cols)` map of a word, given as text (first occurrence) or as an index into `words`."""
        return self.maps[word if isinstance(word, int) else self.word_index(word)]

    def phrase_map(self, phrase: str) -> np.ndarray:
        """`(rows, cols)` mean of the maps of the phrase's words."""
        return self.maps[self.phrase_indices(phrase)].mean(axis=0)


def _model_parameter(module: torch.nn.Module) -> torch.Tensor:
    return next(module.parameters())


@torch.no_grad()
def word_attention(model, processor, image, report: str) -> WordAttention:
    """
    Word <-> region attention of `report` over `image`, as the local contrastive loss computes it.

    Args:
        model: an `AltaModel` or `AltaForPreTraining` (its `alta` part is used); put it in eval mode first.
        processor: the model's `AltaProcessor` (a fast, i.e. `tokenizers`-backed, tokenizer: words come from its
            word ids and offsets).
        image: anything `load_radiograph` reads (JPEG/PNG/DICOM path, PIL image, array).
        report (`str`): the report; truncated as the processor truncates (`processor.max_length` tokens).

    Returns:
        [`WordAttention`].

    Raises:
        RadiographLoadError: the image cannot be read. PictureError: the report has no words.
    """
    alta = getattr(model, "alta", model)
    if not isinstance(report, str) or not report.strip():
        raise PictureError(f"the report must be a non-empty string, got {report!r}")
    radiograph = load_radiograph(image)
    parameter = _model_parameter(alta)
    pixel_values = processor.image_processor(radiograph, return_tensors="pt")["pixel_values"]
    pixel_values = pixel_values.to(parameter.device, parameter.dtype)
    encoding = processor.tokenizer(
        report, max_length=processor.max_length, truncation=True, return_offsets_mapping=True,
        return_token_type_ids=False, return_tensors="pt",
    )
    input_ids = encoding["input_ids"].to(parameter.device)
    attention_mask = encoding["attention_mask"].to(parameter.device)

    image_local = alta.get_image_local_features(pixel_values)
    text_local = alta.get_text_local_features(input_ids, attention_mask)
    t1 = alta.local_logit_scales.exp()[0]
    # the words of the local loss: every token after [CLS] ([SEP] included), as the model passes them
    attention = word_region_attention(image_local, text_local, t1, attention_mask[:, 1:])[0].float().cpu()

    # group the word pieces (token i is row i - 1 of `attention`) into the tokenizer's words
    pieces: dict[int, list[int]] = {}
    offsets = encoding["offset_mapping"][0].tolist()
    spans: dict[int, list[int]] = {}
    for token, word in enumerate(encoding.word_ids(0)):
        if word is None or token == 0:
            continue
        pieces.setdefault(word, []).append(token - 1)
        start, end = offsets[token]
        span = spans.setdefault(word, [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
    if not pieces:
        raise PictureError(f"the report {report!r} has no words after tokenisation")
    order = sorted(pieces)
    vision = alta.config.vision_config
    rows, cols = vision.image_size // vision.patch_size, vision.image_size // vision.patch_size
    if rows * cols != attention.shape[-1]:
        raise PictureError(f"{attention.shape[-1]} regions do not form the {rows}x{cols} patch grid of the config")
    maps = torch.stack([attention[pieces[word]].mean(0) for word in order]).reshape(len(order), rows, cols)
    return WordAttention(
        report=report,
        words=[report[spans[word][0] : spans[word][1]] for word in order],
        spans=[tuple(spans[word]) for word in order],
        maps=maps.numpy(),
        image=radiograph,
        crop_box=crop_box(radiograph.size, processor.image_processor),
    )


def render_attention(
    image: Image.Image,
    attention_map: np.ndarray,
    box: tuple[float, float, float, float],
    *,
    title: str | None = None,
    max_side: int = 512,
    alpha: float = 0.45,
    colormap: str = "jet",
) -> Image.Image:
    """
    The radiograph (scaled so that its longer side is at most `max_side`, aspect kept) with `attention_map`
    (`(rows, cols)`) upsampled bilinearly onto `box` (the crop the model saw, in `image` pixels) and blended in with
    `colormap` at opacity `alpha`. Colours span each map's own minimum..maximum; `title` is written top left.
    """
    from matplotlib import colormaps

    scale = min(1.0, max_side / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    picture = image.convert("L").resize(size, Image.Resampling.BICUBIC).convert("RGB")
    left, top, right, bottom = (round(value * scale) for value in box)
    left, top = max(left, 0), max(top, 0)
    right, bottom = min(right, size[0]), min(bottom, size[1])
    heat = np.asarray(attention_map, dtype=np.float32)
    heat = np.asarray(Image.fromarray(heat, mode="F").resize((right - left, bottom - top), Image.Resampling.BILINEAR))
    low, high = float(heat.min()), float(heat.max())
    heat = (heat - low) / (high - low) if high > low else np.zeros_like(heat)
    colours = colormaps[colormap](heat)[..., :3] * 255.0
    region = np.asarray(picture.crop((left, top, right, bottom)), dtype=np.float32)
    blended = np.clip((1.0 - alpha) * region + alpha * colours, 0, 255).round().astype(np.uint8)
    picture.paste(Image.fromarray(blended, mode="RGB"), (left, top))
    if title:
        draw = ImageDraw.Draw(picture)
        font = _font(max(12, size[1] // 28))
        text_box = draw.textbbox((4, 4), title, font=font)
        draw.rectangle((text_box[0] - 3, text_box[1] - 3, text_box[2] + 3, text_box[3] + 3), fill=(0, 0, 0))
        draw.text((4, 4), title, fill=(255, 255, 255), font=font)
    return picture


def save_attention_pictures(
    model, processor, image, report: str, output_dir, *, words: list[str] | None = None, phrase: str | None = None,
    max_side: int = 512, alpha: float = 0.45, colormap: str = "jet",
) -> list[Path]:
    """
    Write attention heat maps as PNG files into `output_dir` and return their paths.

    - `phrase` given: one picture `attention_phrase_<phrase>.png` of the mean of the phrase's word maps.
    - `words` given: one picture `attention_<index>_<word>.png` per listed word (first occurrence in the report).
    - neither: one picture per word of the report that holds a letter or digit (punctuation is skipped).

    Each picture has the aspect of the input image (see [`render_attention`]).
    """
    if words is not None and phrase is not None:
        raise PictureError("give either words or a phrase, not both")
    attention = word_attention(model, processor, image, report)
    if phrase is not None:
        indices = attention.phrase_indices(phrase)
        jobs = [(f"attention_phrase_{_slug(phrase)}.png", " ".join(attention.words[i] for i in indices),
                 attention.maps[indices].mean(axis=0))]
    else:
        if words is not None:
            indices = [attention.word_index(word) for word in words]
        else:
            indices = [i for i, word in enumerate(attention.words) if any(c.isalnum() for c in word)]
        jobs = [(f"attention_{i:03d}_{_slug(attention.words[i])}.png", attention.words[i], attention.maps[i])
                for i in indices]
    output_dir = Path(output_dir)
    return [
        _save_png(render_attention(attention.image, heat, attention.crop_box, title=title, max_side=max_side,
                                   alpha=alpha, colormap=colormap), output_dir / name)
        for name, title, heat in jobs
    ]


# --------------------------------------------------------------------------------------------------------------
# Masked-region-modelling reconstruction
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Reconstruction:
    """
    One MRM reconstruction of the current frontal view (training geometry, no augmentation).

    Attributes:
        target_pixel_values (`torch.Tensor` of shape `(C, R, R)`): the reconstruction target, normalised as the
            processor normalises (R = `reconstruction_image_size`).
        reconstructed_pixel_values (`torch.Tensor` of shape `(C, R, R)`): the decoder's prediction of every patch in
            the same normalised space; with `norm_pix_loss` the per-patch normalisation is undone with the target
            patch's mean and variance (as MAE's visualisation).
        predicted_patches (`torch.Tensor` of shape `(N, p * p * C)`): the raw decoder output.
        mask (`np.ndarray` of shape `(rows, cols)`, bool): True where the patch was removed from the encoder input.
        patch_size (`int`): target patch side `p` in pixels.
        image_mean, image_std (`list[float]`): the processor's normalisation, to bring pixels back to [0, 1].
    """

    target_pixel_values: torch.Tensor
    reconstructed_pixel_values: torch.Tensor
    predicted_patches: torch.Tensor
    mask: np.ndarray
    patch_size: int
    image_mean: list[float]
    image_std: list[float]

    def to_display(self, pixel_values: torch.Tensor) -> np.ndarray:
        """Normalised `(C, R, R)` pixels -> `(R, R)` uint8 gray (normalisation undone, channels averaged)."""
        mean = torch.tensor(self.image_mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.image_std, dtype=torch.float32)[:, None, None]
        gray = (pixel_values.float() * std + mean).mean(0).clamp(0, 1)
        return (gray * 255).round().to(torch.uint8).numpy()

    def pixel_mask(self) -> np.ndarray:
        """`(R, R)` bool: True on the pixels of removed patches."""
        return np.kron(self.mask, np.ones((self.patch_size, self.patch_size), dtype=bool)).astype(bool)


@torch.no_grad()
def reconstruct(model, processor, image, *, seed: int = 0) -> Reconstruction:
    """
    Mask the current frontal view of `image` with seeded MAE noise and let the decoder rebuild it.

    The study preprocessing without augmentation (`processor.image_processor.preprocess_study(..., augment=False)`)
    gives the encoder input (slot 0) and the reconstruction target; the model's own `encode_views` masks and encodes
    the slot (`noise = torch.rand` from a generator seeded with `seed`, the model's `mask_ratio`) and its decoder
    predicts every patch, exactly as in `AltaForPreTraining.forward`.

    Args:
        model: an `AltaForPreTraining` (eval mode) whose decoder was trained or converted.
        processor: the model's `AltaProcessor`.
        image: anything `load_radiograph` reads.
        seed (`int`): seed of the mask.

    Raises:
        RadiographLoadError: the image cannot be read. PictureError: the model has no reconstruction decoder.
    """
    if not (hasattr(model, "decoder") and hasattr(model, "encode_views") and hasattr(model, "unpatchify")):
        raise PictureError(f"{type(model).__name__} has no reconstruction decoder; load an AltaForPreTraining model")
    config = model.config
    radiograph = load_radiograph(image)
    image_processor = processor.image_processor
    # augment=False draws nothing that is used, but the draws still consume a generator: keep the global one untouched
    sample = image_processor.preprocess_study(radiograph, generator=torch.Generator().manual_seed(seed), augment=False)
    parameter = _model_parameter(model)
    # only slot 0 matters: every slot is encoded on its own and the decoder sees slot 0 alone
    pixel_values = sample["pixel_values"][None, :1].to(parameter.device, parameter.dtype)
    view_mask = torch.ones(1, 1, dtype=torch.long, device=parameter.device)
    noise = torch.rand((1, 1, config.num_patches), generator=torch.Generator().manual_seed(seed))
    hidden_states, mask, ids_restore = model.encode_views(pixel_values, view_mask, noise.to(parameter.device))
    predicted = model.decoder(hidden_states[:, 0], ids_restore[:, 0]).logits.float().cpu()

    target = sample["target_pixel_values"].float()
    patch_size = config.reconstruction_patch_size
    patches = predicted
    if config.vision_config.norm_pix_loss:
        target_patches = patchify(target[None], patch_size)
        mean = target_patches.mean(dim=-1, keepdim=True)
        var = target_patches.var(dim=-1, keepdim=True)  # unbiased, as the loss
        patches = predicted * (var + _NORM_PIX_EPS).sqrt() + mean
    grid = config.reconstruction_image_size // patch_size
    return Reconstruction(
        target_pixel_values=target,
        reconstructed_pixel_values=model.unpatchify(patches)[0],
        predicted_patches=predicted[0],
        mask=mask[0, 0].reshape(grid, grid).bool().cpu().numpy(),
        patch_size=patch_size,
        image_mean=list(image_processor.image_mean),
        image_std=list(image_processor.image_std),
    )


def reconstruction_panel_boxes(panel_size: int) -> list[tuple[int, int, int, int]]:
    """`(left, top, right, bottom)` of the three panels (original, masked input, reconstruction) in the picture
    [`render_reconstruction`] draws for panels of `panel_size` pixels."""
    return [
        (i * (panel_size + _PANEL_GAP), _CAPTION_HEIGHT, i * (panel_size + _PANEL_GAP) + panel_size,
         _CAPTION_HEIGHT + panel_size)
        for i in range(3)
    ]


def render_reconstruction(result: Reconstruction) -> Image.Image:
    """
    Three panels side by side under captions: the original target, the masked input (removed patches filled with
    `MASKED_PATCH_COLOR`) and the reconstruction (decoder predictions on the removed patches, the original on the
    visible ones, as in MAE's figures; the raw prediction of every patch is in
    `result.reconstructed_pixel_values`).
    """
    original = result.to_display(result.target_pixel_values)
    removed = result.pixel_mask()
    masked = np.repeat(original[..., None], 3, axis=-1)
    masked[removed] = MASKED_PATCH_COLOR
    rebuilt = np.where(removed, result.to_display(result.reconstructed_pixel_values), original)
    panels = [
        ("original", Image.fromarray(original, mode="L")),
        (f"masked ({result.mask.mean():.0%})", Image.fromarray(masked, mode="RGB")),
        ("reconstruction", Image.fromarray(rebuilt, mode="L")),
    ]
    size = original.shape[0]
    boxes = reconstruction_panel_boxes(size)
    picture = Image.new("RGB", (boxes[-1][2], boxes[-1][3]), _BACKGROUND)
    draw = ImageDraw.Draw(picture)
    font = _font(_CAPTION_HEIGHT - 8)
    for (caption, panel), (left, top, _, _) in zip(panels, boxes):
        picture.paste(panel.convert("RGB"), (left, top))
        draw.text((left + 2, 3), caption, fill=(0, 0, 0), font=font)
    return picture


def save_reconstruction_picture(model, processor, image, output_dir, *, seed: int = 0) -> Path:
    """Write `reconstruction_seed<seed>.png` (see [`render_reconstruction`]) into `output_dir`; returns its path."""
    result = reconstruct(model, processor, image, seed=seed)
    return _save_png(render_reconstruction(result), Path(output_dir) / f"reconstruction_seed{seed}.png")


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------


def load_pretraining_model(model_dir, *, need_decoder: bool = False):
    """`(AltaForPreTraining in eval mode, processor)` from a saved folder (`processing.load_processor`).

    Raises:
        PictureError: `need_decoder` and the folder holds no decoder weights (an inference-only `AltaModel` folder).
    """
    from alta_hf.modeling_alta import AltaForPreTraining
    from alta_hf.processing import load_processor

    model, info = AltaForPreTraining.from_pretrained(model_dir, output_loading_info=True)
    missing_decoder = [key for key in info.get("missing_keys", ()) if key.startswith("decoder.")]
    if need_decoder and missing_decoder:
        raise PictureError(
            f"{model_dir}: the folder has no reconstruction decoder weights ({len(missing_decoder)} missing, e.g. "
            f"{missing_decoder[0]}); save the AltaForPreTraining model, not only AltaModel"
        )
    return model.eval(), load_processor(model_dir)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m alta_hf.evaluation.pictures", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub):
        sub.add_argument("--model", required=True, help="saved AltaForPreTraining folder (with processor/tokenizer)")
        sub.add_argument("--image", required=True, help="radiograph: JPEG, PNG or DICOM file")
        sub.add_argument("--output-dir", required=True, type=Path, help="folder for the PNG files")
        sub.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")

    attention = commands.add_parser("attention", help="word <-> region attention heat maps")
    common(attention)
    attention.add_argument("--report", required=True, help="report text")
    which = attention.add_mutually_exclusive_group()
    which.add_argument("--words", nargs="+", help="words to draw, one picture each (default: every word)")
    which.add_argument("--phrase", help="draw one picture of the mean attention of this run of words")
    attention.add_argument("--max-side", type=int, default=512, help="longer side of the pictures in pixels")
    attention.add_argument("--alpha", type=float, default=0.45, help="opacity of the heat map")
    attention.add_argument("--colormap", default="jet", help="matplotlib colour map")

    reconstruction = commands.add_parser("reconstruction", help="original / masked input / reconstruction")
    common(reconstruction)
    reconstruction.add_argument("--seed", type=int, default=0, help="seed of the patch mask")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        # read the image first: a wrong path should not cost a model load
        image = load_radiograph(args.image)
        model, processor = load_pretraining_model(args.model, need_decoder=args.command == "reconstruction")
        model.to(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if args.command == "attention":
            paths = save_attention_pictures(
                model, processor, image, args.report, args.output_dir, words=args.words, phrase=args.phrase,
                max_side=args.max_side, alpha=args.alpha, colormap=args.colormap,
            )
        else:
            paths = [save_reconstruction_picture(model, processor, image, args.output_dir, seed=args.seed)]
    except (RadiographLoadError, PictureError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
