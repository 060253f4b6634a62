"""On-disk cache of embeddings, keyed by content fingerprints of the model, the processor and the inputs,
and `CachedEmbedder`, through which the protocols embed their images and texts.

A key changes whenever anything that can change an embedding changes: the model's files (or
weights), the processor configuration, the image files (path, size, modification time), the texts
after cleaning, the tokenisation protocol and the decoding mode. Re-running an evaluation with the
same inputs therefore reads the embeddings back instead of running the model.
"""

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from fnmatch import fnmatch
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .data import EvaluationDataError
from .embedding import ImageEmbeddings, TextProtocol, embed_images, embed_texts, mean_class_embeddings

__all__ = [
    "EmbeddingCache",
    "fingerprint",
    "fingerprint_model_dir",
    "fingerprint_module",
    "fingerprint_processor",
    "fingerprint_files",
    "CachedEmbedder",
]

logger = logging.getLogger(__name__)

# Files of a model folder that cannot change an embedding: documentation, plots, evaluation output.
_MODEL_DIR_IGNORE = ("README.md", "*.png", ".gitattributes", "*.lock", "metrics.json")
_HASH_BLOCK = 1 << 20


def fingerprint(*parts) -> str:
    """SHA-256 of JSON-serialisable parts (stable across runs and machines)."""
    payload = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=True).encode()
    return hashlib.sha256(payload).hexdigest()


def fingerprint_model_dir(directory) -> str:
    """Content hash of the files of a saved model folder (weights, configs, tokenizer, remote code)."""
    directory = Path(directory)
    digest = hashlib.sha256()
    # A Hugging Face model folder is flat; sub-folders (checkpoints, logs) do not define the model.
    files = [
        path
        for path in sorted(directory.iterdir())
        if path.is_file()
        and not path.name.startswith(".")
        and not any(fnmatch(path.name, pattern) for pattern in _MODEL_DIR_IGNORE)
    ]
    if not files:
        raise FileNotFoundError(f"{directory}: no model files to fingerprint")
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            while block := handle.read(_HASH_BLOCK):
                digest.update(block)
    return digest.hexdigest()


def fingerprint_module(model: torch.nn.Module) -> str:
    """Content hash of an in-memory model: its config (if any) and every state-dict tensor."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_json_string"):
        digest.update(config.to_json_string().encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fingerprint_processor(processor) -> str:
    """Hash of a processor's saved configuration (image sizes, normalisation, tokenizer settings)."""
    for method in ("to_json_string", "to_dict"):
        if hasattr(processor, method):
            try:
                return fingerprint(type(processor).__name__, getattr(processor, method)())
            except (TypeError, ValueError):  # some processors hold objects that do not serialise
                continue
    return fingerprint(type(processor).__module__, type(processor).__qualname__)


def fingerprint_files(paths: list[str]) -> str:
    """Hash of a list of files by path, size and modification time (missing files included as such)."""
    entries = []
    for path in paths:
        try:
            stat = os.stat(path)
            entries.append((path, stat.st_size, stat.st_mtime_ns))
        except OSError:
            entries.append((path, None, None))
    return fingerprint(entries)


class EmbeddingCache:
    """Tensors + JSON metadata per key, one safetensors file each, written atomically."""

    def __init__(self, directory):
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.safetensors"

    def load(self, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = json.loads((handle.metadata() or {}).get("alta_meta", "{}"))
            return load_file(str(path)), metadata
        except (OSError, ValueError, SafetensorError) as error:  # a damaged entry is recomputed, not fatal
            logger.warning("ignoring unreadable embedding cache entry %s (%s)", path, error)
            return None

    def save(self, key: str, tensors: dict[str, torch.Tensor], metadata: dict) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        temporary = path.with_suffix(f".tmp{os.getpid()}")
        contiguous = {name: tensor.contiguous() for name, tensor in tensors.items()}
        save_file(contiguous, str(temporary), metadata={"alta_meta": json.dumps(metadata)})
        os.replace(temporary, path)
        return path


def _gloria_cleaner() -> Callable[[str], str]:
    try:
        from alta_hf.processing import clean_report_gloria
    except ImportError as error:
        raise ImportError("text cleaning needs processing.clean_report_gloria (docs/design.md)") from error
    return clean_report_gloria


class CachedEmbedder:
    """Embeds images and texts for the protocols through an optional `EmbeddingCache`, applying a
    `TextProtocol` to texts, and counts what it did (reported in metrics.json)."""

    def __init__(self, model, processor, *, batch_size, device, num_workers, draft_decode, progress, cache, model_key):
        self.model, self.processor = model, processor
        self.image_options = dict(
            batch_size=batch_size, device=device, num_workers=num_workers, draft_decode=draft_decode, progress=progress
        )
        self.text_options = dict(batch_size=batch_size, device=device, progress=progress)
        self.draft_decode = draft_decode
        self.cache, self.model_key = cache, model_key
        self.failures: list[dict] = []
        self.images_evaluated = 0
        self.stats = {"images_embedded": 0, "texts_embedded": 0, "cache_hits": 0, "cache_misses": 0}

    def _cached(self, key_parts, compute):
        if self.cache is None:
            return compute()
        key = fingerprint(self.model_key, *key_parts)
        entry = self.cache.load(key)
        if entry is not None:
            self.stats["cache_hits"] += 1
            return entry
        self.stats["cache_misses"] += 1
        tensors, metadata = compute()
        self.cache.save(key, tensors, metadata)
        return tensors, metadata

    def images(self, paths: list[str], split: str) -> ImageEmbeddings:
        def compute():
            result = embed_images(
                self.model, self.processor, paths, description=f"{split} images", **self.image_options
            )
            self.stats["images_embedded"] += len(result.indices)
            return {"embeddings": result.embeddings, "indices": result.indices}, {"failures": result.failures}

        tensors, metadata = self._cached(("images", fingerprint_files(paths), self.draft_decode), compute)
        failures = metadata["failures"]
        self.images_evaluated += len(tensors["indices"])
        self.failures.extend({"split": split, **failure} for failure in failures)
        if len(tensors["indices"]) == 0:
            first = failures[0] if failures else {"source": "?", "error": "?"}
            raise EvaluationDataError(
                f"none of the {len(paths)} images of split {split!r} could be read; "
                f"first failure: {first['source']}: {first['error']}"
            )
        return ImageEmbeddings(tensors["embeddings"], tensors["indices"], failures)

    def texts(self, texts: Sequence[str], protocol: TextProtocol, description: str) -> torch.Tensor:
        texts = list(texts)
        if protocol.clean:
            clean = _gloria_cleaner()
            texts = [clean(text) for text in texts]

        def compute():
            embeddings = embed_texts(
                self.model, self.processor, texts, max_length=protocol.max_length, truncation=protocol.truncation,
                description=description, **self.text_options,
            )
            self.stats["texts_embedded"] += len(texts)
            return {"embeddings": embeddings}, {}

        tensors, _ = self._cached(("texts", texts, protocol.max_length, protocol.truncation), compute)
        return tensors["embeddings"]

    def class_embeddings(self, class_prompts: dict[str, list[str]], protocol: TextProtocol, description: str):
        """`(num_classes, dim)` unit-norm class embeddings, classes in `class_prompts` order."""
        prompts, groups = [], []
        for index, entries in enumerate(class_prompts.values()):
            prompts.extend(entries)
            groups.extend([index] * len(entries))
        return mean_class_embeddings(self.texts(prompts, protocol, description), groups, len(class_prompts))
