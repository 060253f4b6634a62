"""Loading a model + processor for evaluation from a local folder or a Hub repository id."""

import logging
from pathlib import Path

__all__ = [
    "ModelLoadError", "check_model_and_processor", "load_model_and_processor", "load_processor", "resolve_model_dir",
]

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
    logger.warning("%s: %s; building the default processor with processing.load_processor", model_dir, problem)
    try:
        from alta_hf.processing import load_processor as build_processor

        return build_processor(model_dir)
    except (ImportError, OSError, ValueError) as error:
        raise ModelLoadError(f"{model_dir}: no usable processor ({problem}; {error}); save the processor into the "
                             "model folder") from error


def _input_side(processor) -> int | None:
    """The side of the images the processor makes (its centre crop), if it says."""
    crop = getattr(getattr(processor, "image_processor", None), "crop_size", None)
    height = getattr(crop, "height", None) or (crop.get("height") if isinstance(crop, dict) else None)
    return int(height) if height else None


def check_model_and_processor(model, processor, model_dir: Path) -> None:
    """What evaluation needs, checked before any image is read: the embedding methods, a processor whose images
    have the image tower's size, and a text length within the text tower's position table (lowered if not)."""
    missing = [name for name in ("get_image_features", "get_text_features") if not hasattr(model, name)]
    if missing:
        raise ModelLoadError(
            f"{model_dir}: {type(model).__name__} (model_type {getattr(model.config, 'model_type', None)!r}) has no "
            f"{' or '.join(missing)}; not an ALTA or CLIP-like model"
        )
    expected = getattr(getattr(model.config, "vision_config", None), "image_size", None)
    side = _input_side(processor)
    if expected and side and side != expected:
        saved = (Path(model_dir) / "processor_config.json").is_file()
        raise ModelLoadError(
            f"{model_dir}: the processor makes {side}-px images but the model's image tower takes {expected}-px ones"
            + ("" if saved else "; the folder has no processor_config.json, so the default processor was used: save "
               "the training processor into it (`python -m alta_hf.processing.write_processor` writes the default only)")
        )
    from alta_hf.processing import cap_text_length

    text_config = getattr(model.config, "text_config", None)
    cap_text_length(processor, getattr(text_config, "max_position_embeddings", None), str(model_dir))


def load_model_and_processor(model: str, *, revision: str | None = None, token: str | bool | None = None, dtype=None):
    """`(model, processor, model_dir)` with `AutoModel` / `AutoProcessor` and `trust_remote_code=True`, checked by
    `check_model_and_processor`. Weights that do not fit the architecture in `config.json` (a folder whose config
    names another model type) are refused instead of being left randomly initialised."""
    from safetensors import SafetensorError
    from transformers import AutoModel

    from alta_hf.modeling_alta.weight_files import corrupt_weights_message

    model_dir = resolve_model_dir(model, revision=revision, token=token)
    try:
        loaded, info = AutoModel.from_pretrained(
            model_dir, trust_remote_code=True, output_loading_info=True, **({"dtype": dtype} if dtype else {})
        )
    except SafetensorError as error:
        raise ModelLoadError(f"{model_dir}: {corrupt_weights_message(model_dir, error)}") from error
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{model_dir}: cannot load the model ({error})") from error
    missing = list(info.get("missing_keys") or [])
    if missing:
        raise ModelLoadError(
            f"{model_dir}: {len(missing)} weights of {type(loaded).__name__} (model_type "
            f"{getattr(loaded.config, 'model_type', None)!r} in config.json) are not in the weights file, e.g. "
            f"{sorted(missing)[:3]}; the config does not describe these weights (is it an ALTA folder?)"
        )
    processor = load_processor(model_dir)
    check_model_and_processor(loaded, processor, model_dir)
    return loaded.eval(), processor, model_dir
