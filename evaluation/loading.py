"""Loading a model + processor for evaluation from a local folder or a Hub repository id."""

import logging
from pathlib import Path

__all__ = ["ModelLoadError", "resolve_model_dir", "load_processor", "load_model_and_processor"]

logger = logging.getLogger(__name__)


class ModelLoadError(ValueError):
    """A model or processor cannot be found or loaded; the message names the folder or repo id."""


def resolve_model_dir(model: str, *, revision: str | None = None, token: str | bool | None = None) -> Path:
    """A local folder as is, otherwise a Hub repo id downloaded (or found in the cache) as a snapshot."""
    path = Path(model)
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"{model} is a file; pass a model folder or a Hub repo id")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return Path(snapshot_download(model, revision=revision, token=token))
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise ModelLoadError(
            f"{model}: not a local folder, and getting it from the Hub failed ({type(error).__name__}: {error})"
        ) from error


def _is_full_processor(processor) -> bool:
    # AutoProcessor falls back to a bare tokenizer or image processor when processor files are missing.
    return hasattr(processor, "image_processor") and hasattr(processor, "tokenizer")


def load_processor(model_dir: Path):
    """`AutoProcessor` from the folder (its own remote code); if the folder has no processor files,
    `processing.load_processor` (the default image processor with the folder's tokenizer)."""
    from transformers import AutoProcessor

    problem = None
    try:
        processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
        if _is_full_processor(processor):
            return processor
        problem = f"AutoProcessor gave only a {type(processor).__name__}"
    except (OSError, ValueError, TypeError, KeyError) as error:
        problem = f"AutoProcessor failed: {error}"
    from processing import load_processor as build_processor

    logger.info("%s: %s; building the processor with processing.load_processor", model_dir, problem)
    try:
        return build_processor(model_dir)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{model_dir}: no usable processor ({problem}; {error}); save the processor into the "
                             "model folder") from error


def load_model_and_processor(model: str, *, revision: str | None = None, token: str | bool | None = None, dtype=None):
    """`(model, processor, model_dir)` with `AutoModel` / `AutoProcessor` and `trust_remote_code=True`."""
    from transformers import AutoModel

    model_dir = resolve_model_dir(model, revision=revision, token=token)
    try:
        loaded = AutoModel.from_pretrained(model_dir, trust_remote_code=True, **({"dtype": dtype} if dtype else {}))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{model_dir}: cannot load the model ({error})") from error
    return loaded.eval(), load_processor(model_dir), model_dir
