"""Batched, gradient-free image and text embedding through the model and processor contracts.

Only the interfaces of docs/design.md are used: `model.get_image_features(pixel_values=...)`,
`model.get_text_features(input_ids=..., attention_mask=...)`, `processor(images=[...])`,
`processor(text=[...], padding=..., max_length=..., truncation=...)`, and `load_radiograph` /
`RadiographLoadError` from `processing`. Embeddings come back unnormalised, in float32, on the CPU.
`feature_tensor` takes the bare features out of a `get_*_features` result on either convention (transformers 5's
`BaseModelOutputWithPooling`, as ALTA returns it, or a plain tensor).
"""

import logging
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

__all__ = [
    "ImageEmbeddings",
    "TextProtocol",
    "embed_images",
    "embed_texts",
    "mean_class_embeddings",
    "eval_mode",
    "feature_tensor",
    "model_device",
    "text_position_limit",
]

logger = logging.getLogger(__name__)


@dataclass
class ImageEmbeddings:
    """Embeddings of the images that could be read, and what happened to the others.

    Attributes:
        embeddings: `(num_loaded, projection_dim)` unnormalised projected image features.
        indices: `(num_loaded,)` position of each embedded image in the input list.
        failures: one `{"index", "source", "error"}` per image that `load_radiograph` rejected.
    """

    embeddings: torch.Tensor
    indices: torch.Tensor
    failures: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class TextProtocol:
    """How a protocol turns texts into token ids.

    Attributes:
        max_length: pad to this many tokens; `None` means the processor's default (the training
            report length, 128 for ALTA).
        truncation: `False` keeps every token of a longer text, as ALTA's evaluation scripts do.
        clean: apply GLoRIA-style cleaning (`processing.clean_report_gloria`) first.
    """

    max_length: int | None
    truncation: bool
    clean: bool

    def describe(self) -> dict:
        return {"max_length": self.max_length or "processor default", "truncation": self.truncation, "clean": self.clean}



def _radiograph_reader():
    try:
        from alta_hf.processing import RadiographLoadError, load_radiograph
    except ImportError as error:
        raise ImportError(
            "image evaluation needs processing.load_radiograph and processing.RadiographLoadError (docs/design.md)"
        ) from error
    return load_radiograph, RadiographLoadError


class _Radiographs(Dataset):
    """Decodes one radiograph per item; unreadable ones come back as errors instead of raising."""

    def __init__(self, sources: Sequence, min_size: int | None, dicom_lut: bool = False):
        self.sources = sources
        self.min_size = min_size
        # the image processor's DICOM option, passed only when set (a stand-in reader may not take it)
        self.options = {"dicom_lut": True} if dicom_lut else {}

    def __len__(self):
        return len(self.sources)

    def __getitem__(self, index):
        load_radiograph, load_error = _radiograph_reader()
        source = self.sources[index]
        name = source if isinstance(source, str) else f"<{type(source).__name__} at position {index}>"
        try:
            return index, name, load_radiograph(source, min_size=self.min_size, **self.options), None
        except load_error as error:
            return index, name, None, str(error)


class _ProcessImages:
    """Collate function: one batched processor call over the decoded images of a batch."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, items):
        loaded = [(index, image) for index, _, image, _ in items if image is not None]
        failures = [
            {"index": index, "source": name, "error": error} for index, name, image, error in items if image is None
        ]
        pixel_values = None
        if loaded:
            pixel_values = self.processor(images=[image for _, image in loaded], return_tensors="pt")["pixel_values"]
        return torch.tensor([index for index, _ in loaded], dtype=torch.long), pixel_values, failures


def model_device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def _place(model: torch.nn.Module, device) -> torch.device:
    if device is None:
        return model_device(model)
    device = torch.device(device)
    if model_device(model) != device:
        model.to(device)
    return device


@contextmanager
def eval_mode(model: torch.nn.Module):
    """Run in eval mode and restore the previous mode afterwards (training loops call evaluation)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def feature_tensor(output) -> torch.Tensor:
    """The projected features of a `get_image_features` / `get_text_features` result, whichever convention the model
    follows: ALTA and transformers 5's CLIP-like models return a `BaseModelOutputWithPooling` whose `pooler_output`
    holds them (`return_dict=False`: a tuple, `pooler_output` second); older models return the tensor itself."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple) and len(output) > 1 and isinstance(output[1], torch.Tensor):
        return output[1]
    pooled = getattr(output, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    raise TypeError(f"expected a tensor of features from the model, got {type(output).__name__}")


def _decode_size(processor) -> int | None:
    """Shortest side the image processor resizes to, so JPEG draft decoding never goes below it."""
    size = getattr(getattr(processor, "image_processor", None), "size", None)
    if size is None:
        return None
    get = size.get if hasattr(size, "get") else lambda key: getattr(size, key, None)
    if get("shortest_edge"):
        return int(get("shortest_edge"))
    sides = [get("height"), get("width")]
    return int(max(sides)) if all(sides) else None


def embed_images(
    model,
    processor,
    images: Sequence,
    *,
    batch_size: int = 32,
    device=None,
    num_workers: int = 0,
    draft_decode: bool = False,
    progress: bool = True,
    description: str = "images",
) -> ImageEmbeddings:
    """Embed radiographs (paths, PIL images, arrays, tensors) with `model.get_image_features`.

    Args:
        images: anything `processing.load_radiograph` accepts, one per image.
        batch_size: images per forward pass.
        device: where to run; `None` keeps the model where it is, otherwise the model is moved there.
        num_workers: DataLoader worker processes decoding and preprocessing images.
        draft_decode: let JPEG decoding shrink big images (never below the processor's resize
            size): much faster on full-resolution files, but not bit-identical to a full decode.
        progress: show a tqdm bar.

    Returns:
        `ImageEmbeddings`; unreadable images (`RadiographLoadError`) are skipped and listed in `failures`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = _place(model, device)
    dtype = _model_dtype(model)
    loader = DataLoader(
        _Radiographs(images, _decode_size(processor) if draft_decode else None,
                     bool(getattr(getattr(processor, "image_processor", None), "dicom_lut", False))),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_ProcessImages(processor),
    )
    chunks, indices, failures = [], [], []
    bar = tqdm(total=len(images), desc=description, unit="img", disable=not progress)
    with eval_mode(model), torch.no_grad(), bar:
        for batch_indices, pixel_values, batch_failures in loader:
            failures.extend(batch_failures)
            if pixel_values is not None:
                output = model.get_image_features(pixel_values=pixel_values.to(device=device, dtype=dtype))
                features = feature_tensor(output)
                chunks.append(features.float().cpu())
                indices.append(batch_indices)
            bar.update(len(batch_indices) + len(batch_failures))
    for failure in failures:  # the loader's message names the input; add it only where it does not
        source = "" if failure["source"] in failure["error"] else f"{failure['source']}: "
        logger.warning("skipped unreadable image: %s%s", source, failure["error"])
    if not chunks:
        return ImageEmbeddings(torch.empty(0, 0), torch.empty(0, dtype=torch.long), failures)
    return ImageEmbeddings(torch.cat(chunks), torch.cat(indices), failures)


def text_position_limit(model) -> int | None:
    """The text tower's maximum sequence length, if the config says (`text_config.max_position_embeddings`)."""
    config = getattr(model, "config", None)
    text_config = getattr(config, "text_config", None)
    return getattr(text_config, "max_position_embeddings", None)


def _tokenize(processor, texts: list[str], max_length: int | None, truncation: bool, limit: int | None) -> dict:
    if max_length is not None and limit is not None and max_length > limit:
        max_length = limit
    def padded_to(length):
        return processor(text=texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")

    if max_length is None:
        encoded = processor(text=texts, padding="max_length", truncation=True, return_tensors="pt")
    elif truncation:
        encoded = padded_to(max_length)
    else:
        # The official scripts pad to max_length without truncating: a longer text keeps all its tokens.
        encoded = processor(text=texts, padding="longest", truncation=limit is not None, max_length=limit, return_tensors="pt")
        if encoded["input_ids"].shape[1] < max_length:
            encoded = padded_to(max_length)
    if limit is not None and encoded["input_ids"].shape[1] > limit:
        encoded = padded_to(limit)
    return encoded


def embed_texts(
    model,
    processor,
    texts: Sequence[str],
    *,
    max_length: int | None = None,
    truncation: bool = True,
    batch_size: int = 64,
    device=None,
    progress: bool = True,
    description: str = "texts",
) -> torch.Tensor:
    """Embed texts with `model.get_text_features`; returns `(len(texts), projection_dim)` unnormalised.

    Args:
        max_length: pad every text to this many tokens; `None` uses the processor's default length.
        truncation: cut texts longer than `max_length`; with `False` a longer text keeps all its
            tokens (padding to the longest in the batch), as ALTA's evaluation scripts do. Either
            way nothing exceeds the model's position limit.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    texts = list(texts)
    if not texts:
        raise ValueError("no texts to embed")
    device = _place(model, device)
    limit = text_position_limit(model)
    if max_length is not None and limit is not None and max_length > limit:
        logger.warning("text length %d exceeds the model's %d positions; using %d", max_length, limit, limit)
    chunks = []
    bar = tqdm(total=len(texts), desc=description, unit="text", disable=not progress)
    with eval_mode(model), torch.no_grad(), bar:
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            encoded = _tokenize(processor, batch, max_length, truncation, limit)
            output = model.get_text_features(
                input_ids=encoded["input_ids"].to(device), attention_mask=encoded["attention_mask"].to(device)
            )
            chunks.append(feature_tensor(output).float().cpu())
            bar.update(len(batch))
    return torch.cat(chunks)


def mean_class_embeddings(embeddings: torch.Tensor, groups: Sequence[int], num_classes: int) -> torch.Tensor:
    """ALTA's class embedding: mean of the unnormalised prompt embeddings of each class, then L2-normalised.

    Args:
        embeddings: `(num_prompts, projection_dim)` unnormalised prompt embeddings.
        groups: class index of every prompt; every class needs at least one prompt.

    Returns:
        `(num_classes, projection_dim)` unit-norm class embeddings.
    """
    groups = torch.as_tensor(groups, dtype=torch.long)
    counts = torch.bincount(groups, minlength=num_classes)
    if len(counts) != num_classes or (counts == 0).any():
        raise ValueError(f"every class needs at least one prompt, got prompt counts {counts.tolist()}")
    sums = torch.zeros(num_classes, embeddings.shape[1], dtype=embeddings.dtype).index_add_(0, groups, embeddings)
    return F.normalize(sums / counts[:, None].to(embeddings.dtype), dim=-1)
