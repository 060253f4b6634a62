"""Convert an official ALTA checkpoint (`ALTA.pth`, github DopamineLcy/ALTA) into a `save_pretrained` folder.

    python -m alta_hf.modeling_alta.convert_original_alta --checkpoint ALTA.pth --text-model-dir DIR --output-dir OUT

`DIR` is a CXR-BERT folder (`config.json` with `model_type` "cxr-bert", `vocab.txt`): it gives the text geometry
and the vocabulary. The image geometry is read from the tensor shapes; attention head counts cannot be, so they
default to the official ALTA head widths (64 in the encoder, 128 in the decoder) unless given.

The checkpoint is read with `torch.load(weights_only=True)`; a training checkpoint that also holds the optimizer,
the scaler and the `args` namespace is accepted (only `argparse.Namespace` is allow-listed). Every tensor must be
mapped and every model weight provided, otherwise the conversion fails listing the offending keys.
"""

import argparse
import json
import math
import os
import pickle
import re
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from transformers import BertConfig, BertTokenizer

from .configuration_alta import ALTA_VISION_DEFAULTS, AltaConfig
from .modeling_alta import AltaForPreTraining

__all__ = [
    "ConversionError",
    "convert_checkpoint",
    "convert_state_dict",
    "infer_alta_config",
    "infer_vision_config",
    "load_original_checkpoint",
    "map_original_key",
    "read_text_config",
    "save_converted",
]

# The official training length of reports (tokenizer setting written next to the converted model).
OFFICIAL_MAX_LENGTH = 128
# the image tower's and decoder's LayerNorm eps of the configuration defaults (the official 1e-6)
LAYER_NORM_EPS = ALTA_VISION_DEFAULTS["layer_norm_eps"]
# Attention head widths of the official model (ViT-B: 768 / 12 heads; MRM decoder: 768 / 6 heads): the tensors do not
# tell the head count, these give the defaults.
OFFICIAL_ENCODER_HEAD_WIDTH = 64
OFFICIAL_DECODER_HEAD_WIDTH = 128
_BASE = "alta."
_VIT = "alta.vision_model."
_BERT_IN = r"bert_encoder\.bert\."
_BERT = "alta.text_model."


def _projection_head_rules(official: str, ours: str) -> list[tuple[str, str]]:
    return [
        (official + r"\.(dense_to_hidden|dense_to_output)\.(weight|bias)", ours + r".\1.\2"),
        (official + r"\.LayerNorm\.(weight|bias)", ours + r".layer_norm.\1"),
    ]


# One-to-one renames: `re.fullmatch` pattern on the official key -> template of the key in `AltaForPreTraining`.
_RENAMES = [
    # image tower (timm ViT -> transformers ViTMAE with peft-wrapped adapter targets)
    (r"cls_token", _VIT + "embeddings.cls_token"),
    (r"pos_embed", _VIT + "embeddings.position_embeddings"),
    (r"patch_embed\.proj\.(weight|bias)", _VIT + r"embeddings.patch_embeddings.projection.\1"),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", _VIT + r"layers.\1.layernorm_before.\2"),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", _VIT + r"layers.\1.layernorm_after.\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", _VIT + r"layers.\1.attention.o_proj.base_layer.\2"),
    (r"blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", _VIT + r"layers.\1.mlp.base_layer.\2.\3"),
    (r"blocks\.(\d+)\.attn_adapter\.D_fc1\.(weight|bias)", _VIT + r"layers.\1.attention.o_proj.bottleneck_down.alta.\2"),
    (r"blocks\.(\d+)\.attn_adapter\.D_fc2\.(weight|bias)", _VIT + r"layers.\1.attention.o_proj.bottleneck_up.alta.\2"),
    (r"blocks\.(\d+)\.mlp_adapter\.D_fc1\.(weight|bias)", _VIT + r"layers.\1.mlp.bottleneck_down.alta.\2"),
    (r"blocks\.(\d+)\.mlp_adapter\.D_fc2\.(weight|bias)", _VIT + r"layers.\1.mlp.bottleneck_up.alta.\2"),
    (r"norm\.(weight|bias)", _VIT + r"layernorm.\1"),
    # multiview inputs, heads and scales of the inference model
    (r"temporal_embedding", _BASE + "temporal_embedding"),
    (r"view_embedding", _BASE + "view_embedding"),
    (r"logit_scale", _BASE + "logit_scale"),
    *_projection_head_rules(r"projection_head", _BASE + "visual_projection"),
    *_projection_head_rules(r"local_projection_head", _BASE + "visual_local_projection"),
    *_projection_head_rules(r"bert_encoder\.cls_projection_head", _BASE + "text_projection"),
    *_projection_head_rules(r"bert_encoder\.local_projection_head", _BASE + "text_local_projection"),
    # text tower (BERT with peft-wrapped adapter targets)
    (_BERT_IN + r"embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)\.weight", _BERT + r"embeddings.\1.weight"),
    (_BERT_IN + r"embeddings\.LayerNorm\.(weight|bias)", _BERT + r"embeddings.LayerNorm.\1"),
    (
        _BERT_IN + r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)",
        _BERT + r"encoder.layer.\1.attention.self.\2.\3",
    ),
    (
        _BERT_IN + r"encoder\.layer\.(\d+)\.attention\.output\.(dense|LayerNorm)\.(weight|bias)",
        _BERT + r"encoder.layer.\1.attention.output.base_layer.\2.\3",
    ),
    (_BERT_IN + r"encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)", _BERT + r"encoder.layer.\1.intermediate.dense.\2"),
    (
        _BERT_IN + r"encoder\.layer\.(\d+)\.output\.(dense|LayerNorm)\.(weight|bias)",
        _BERT + r"encoder.layer.\1.output.base_layer.\2.\3",
    ),
    (
        _BERT_IN + r"encoder\.layer\.(\d+)\.attn_adapter\.D_fc1\.(weight|bias)",
        _BERT + r"encoder.layer.\1.attention.output.bottleneck_down.alta.\2",
    ),
    (
        _BERT_IN + r"encoder\.layer\.(\d+)\.attn_adapter\.D_fc2\.(weight|bias)",
        _BERT + r"encoder.layer.\1.attention.output.bottleneck_up.alta.\2",
    ),
    (_BERT_IN + r"encoder\.layer\.(\d+)\.mlp_adapter\.D_fc1\.(weight|bias)", _BERT + r"encoder.layer.\1.output.bottleneck_down.alta.\2"),
    (_BERT_IN + r"encoder\.layer\.(\d+)\.mlp_adapter\.D_fc2\.(weight|bias)", _BERT + r"encoder.layer.\1.output.bottleneck_up.alta.\2"),
    # training-only modules
    (r"bert_encoder\.cls\.predictions\.transform\.(dense|LayerNorm)\.(weight|bias)", r"mlm_head.predictions.transform.\1.\2"),
    (r"bert_encoder\.cls\.predictions\.bias", "mlm_head.predictions.bias"),
    (r"bert_embed\.(weight|bias)", r"image_to_text.\1"),
    (r"missing_token", "missing_view_token"),
    (r"decoder_embed\.(weight|bias)", r"decoder.decoder_embed.\1"),
    (r"mask_token", "decoder.mask_token"),
    (r"decoder_pos_embed", "decoder.decoder_pos_embed"),
    (r"decoder_blocks\.(\d+)\.norm1\.(weight|bias)", r"decoder.decoder_layers.\1.layernorm_before.\2"),
    (r"decoder_blocks\.(\d+)\.norm2\.(weight|bias)", r"decoder.decoder_layers.\1.layernorm_after.\2"),
    (r"decoder_blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"decoder.decoder_layers.\1.attention.o_proj.\2"),
    (r"decoder_blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"decoder.decoder_layers.\1.mlp.\2.\3"),
    (r"decoder_norm\.(weight|bias)", r"decoder.decoder_norm.\1"),
    (r"decoder_pred\.(weight|bias)", r"decoder.decoder_pred.\1"),
]
# timm's fused attention input projection, rows ordered (q, k, v): split into three Linears.
_FUSED_QKV = [
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", _VIT + r"layers.\1.attention.{}_proj.\2"),
    (r"decoder_blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"decoder.decoder_layers.\1.attention.{}_proj.\2"),
]
# Three scalar logs of the local-loss temperatures t1, t2, t3 -> one parameter of shape (3,).
_STACKED = {_BASE + "local_logit_scales": ("logit_scale_local1", "logit_scale_local2", "logit_scale_local3")}
# The official state dict stores both ends of each tie; only the source is kept (after checking they are equal).
_TIED = {
    "bert_encoder.cls.predictions.decoder.weight": "bert_encoder.bert.embeddings.word_embeddings.weight",
    "bert_encoder.cls.predictions.decoder.bias": "bert_encoder.cls.predictions.bias",
}
# Official shapes with a leading singleton axis this package does not keep.
_SQUEEZE_LEADING = {"temporal_embedding", "view_embedding", "missing_token"}


class ConversionError(ValueError):
    """The checkpoint cannot be converted; the message lists every offending key or value."""


def _rename(key: str) -> str | None:
    for pattern, template in _RENAMES:
        match = re.fullmatch(pattern, key)
        if match:
            return match.expand(template)
    return None


def map_original_key(key: str) -> list[str]:
    """The `AltaForPreTraining` parameter names an official key maps to ([] for the dropped end of a tie)."""
    if key in _TIED:
        return []
    for target, parts in _STACKED.items():
        if key in parts:
            return [target]
    for pattern, template in _FUSED_QKV:
        match = re.fullmatch(pattern, key)
        if match:
            return [match.expand(template).format(part) for part in ("q", "k", "v")]
    name = _rename(key)
    if name is None:
        raise KeyError(key)
    return [name]


def convert_state_dict(state_dict: dict, dtype: torch.dtype = torch.float32) -> dict:
    """
    Official state dict (or a subset of it, e.g. its gradients) -> `AltaForPreTraining` state dict.

    Floating tensors are cast to `dtype` (the official `missing_token` is float16). Raises `ConversionError`
    listing every key that no rule maps, tied pairs that differ, and incomplete stacked groups.
    """
    converted, unmapped, problems = {}, [], []
    for key, tensor in state_dict.items():
        try:
            names = map_original_key(key)
        except KeyError:
            unmapped.append(key)
            continue
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
        if key in _TIED:
            source = state_dict.get(_TIED[key])
            if source is not None and not torch.equal(source.to(dtype), tensor):
                problems.append(f"{key} differs from {_TIED[key]}, which it is tied to")
        elif len(names) == 3:
            for name, part in zip(names, tensor.chunk(3, dim=0)):
                converted[name] = part.clone()
        elif names[0] in _STACKED:
            continue
        else:
            converted[names[0]] = tensor.squeeze(0) if key in _SQUEEZE_LEADING else tensor
    for target, parts in _STACKED.items():
        present = [part for part in parts if part in state_dict]
        if present and len(present) != len(parts):
            problems.append(f"{target} needs all of {list(parts)}, found only {present}")
        elif present:
            converted[target] = torch.stack([state_dict[part].reshape(()).to(dtype) for part in parts])
    if unmapped or problems:
        message = []
        if unmapped:
            message.append(f"{len(unmapped)} unmapped key(s): {sorted(unmapped)}")
        message.extend(problems)
        raise ConversionError("Cannot convert the official ALTA state dict: " + "; ".join(message))
    return converted


def load_original_checkpoint(path) -> tuple[dict, argparse.Namespace | None]:
    """(state dict, training `args` or None) of `ALTA.pth`: `{'model': sd, ...}` or a bare state dict."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise ConversionError(f"{path}: the checkpoint file is empty (0 bytes); the download or copy did not finish")
    try:
        # the official save_model also pickles `args` (an argparse.Namespace): allow exactly that class
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message ends by suggesting weights_only=False, which would run whatever the pickle names
        refused = re.search(r"GLOBAL (\S+)", str(error))
        what = f"it names {refused.group(1)}" if refused else str(error).strip().splitlines()[-1]
        raise ConversionError(
            f"{path}: cannot be read with torch.load(weights_only=True): refused because {what}, which a weights-only "
            "load does not allow (only tensors, containers and argparse.Namespace are accepted); loading it fully "
            "could run arbitrary code, so do that only for a file from a trusted source"
        ) from error
    except Exception as error:  # noqa: BLE001 - re-raised with the file named
        # torch's own messages for damaged files are often empty (EOFError) or an errno ("Invalid argument")
        raise ConversionError(
            f"{path} ({path.stat().st_size:,} bytes): cannot be read with torch.load(weights_only=True) "
            f"({type(error).__name__}: {error or 'no details'}); the file is truncated, damaged or not a PyTorch "
            "checkpoint"
        ) from error
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        state_dict, args = checkpoint["model"], checkpoint.get("args")
    elif isinstance(checkpoint, dict) and checkpoint and all(torch.is_tensor(v) for v in checkpoint.values()):
        state_dict, args = checkpoint, None
    else:
        raise ConversionError(f"{path}: expected {{'model': state_dict, ...}} or a bare state dict")
    not_tensors = sorted(k for k, v in state_dict.items() if not torch.is_tensor(v))
    if not_tensors:
        raise ConversionError(f"{path}: state dict entries that are not tensors: {not_tensors}")
    return state_dict, args if isinstance(args, argparse.Namespace) else None


_BERT_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
    "initializer_range", "layer_norm_eps", "pad_token_id",
)


def read_text_config(text_model_dir) -> tuple[BertConfig, dict]:
    """(BertConfig, raw config.json) of a CXR-BERT folder (its `model_type` "cxr-bert" is a BERT geometry)."""
    path = Path(text_model_dir) / "config.json"
    if not path.is_file():
        raise ConversionError(f"{path}: not found (--text-model-dir must be a CXR-BERT folder)")
    raw = json.loads(path.read_text(encoding="utf-8"))
    return BertConfig(**{key: raw[key] for key in _BERT_FIELDS if key in raw}), raw


def _count_layers(state_dict: dict, pattern: str) -> int:
    return len({match.group(1) for key in state_dict if (match := re.match(pattern, key))})


def _divisible_heads(width: int, heads: int, what: str) -> int:
    if heads < 1 or width % heads:
        raise ConversionError(f"{what}: {heads} attention heads do not divide the width {width}; pass the head count")
    return heads


def infer_vision_config(
    state_dict: dict,
    vision_num_attention_heads: int | None = None,
    decoder_num_attention_heads: int | None = None,
    layer_norm_eps: float = LAYER_NORM_EPS,
    mask_ratio: float = 0.75,
    norm_pix_loss: bool = True,
    what: str = "official ALTA",
) -> tuple[dict, int]:
    """(`vision_config` dict, `reconstruction_image_size`) of a timm/MAE-named image tower + decoder state dict (ALTA
    or MRM): the geometry comes from the tensor shapes, the head counts default to the official head widths."""
    try:
        width, channels, patch, _ = state_dict["patch_embed.proj.weight"].shape
        grid = math.isqrt(state_dict["pos_embed"].shape[1] - 1)
        intermediate = state_dict["blocks.0.mlp.fc1.weight"].shape[0]
        decoder_width = state_dict["decoder_embed.weight"].shape[0]
        pred_size = state_dict["decoder_pred.weight"].shape[0]
        decoder_intermediate = state_dict["decoder_blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as error:
        raise ConversionError(f"Not an {what} state dict: missing {error.args[0]!r}") from error
    vision_heads = _divisible_heads(
        width, vision_num_attention_heads or width // OFFICIAL_ENCODER_HEAD_WIDTH, "image tower"
    )
    decoder_heads = _divisible_heads(
        decoder_width, decoder_num_attention_heads or decoder_width // OFFICIAL_DECODER_HEAD_WIDTH, "decoder"
    )
    vision_config = {
        "hidden_size": width,
        "num_hidden_layers": _count_layers(state_dict, r"blocks\.(\d+)\."),
        "num_attention_heads": vision_heads,
        "intermediate_size": intermediate,
        "layer_norm_eps": layer_norm_eps,
        "image_size": grid * patch,
        "patch_size": patch,
        "num_channels": channels,
        "decoder_hidden_size": decoder_width,
        "decoder_num_hidden_layers": _count_layers(state_dict, r"decoder_blocks\.(\d+)\."),
        "decoder_num_attention_heads": decoder_heads,
        "decoder_intermediate_size": decoder_intermediate,
        "mask_ratio": mask_ratio,
        "norm_pix_loss": norm_pix_loss,
    }
    return vision_config, grid * math.isqrt(pred_size // channels)


def infer_alta_config(
    state_dict: dict,
    text_config: BertConfig,
    vision_num_attention_heads: int | None = None,
    decoder_num_attention_heads: int | None = None,
    layer_norm_eps: float = LAYER_NORM_EPS,
    mask_ratio: float = 0.75,
    norm_pix_loss: bool = True,
) -> AltaConfig:
    """The `AltaConfig` of an official state dict (image geometry from the tensor shapes, text from `text_config`)."""
    try:
        width = state_dict["patch_embed.proj.weight"].shape[0]
        projection_dim = state_dict["projection_head.dense_to_output.weight"].shape[0]
        bottleneck = state_dict["blocks.0.attn_adapter.D_fc1.weight"].shape[0]
        text_bottleneck = state_dict["bert_encoder.bert.encoder.layer.0.attn_adapter.D_fc1.weight"].shape[0]
        words = state_dict["bert_encoder.bert.embeddings.word_embeddings.weight"].shape
        time_points = state_dict["temporal_embedding"].reshape(-1, width).shape[0]
    except KeyError as error:
        raise ConversionError(f"Not an official ALTA state dict: missing {error.args[0]!r}") from error
    if tuple(words) != (text_config.vocab_size, text_config.hidden_size):
        raise ConversionError(
            f"The text model folder describes vocab {text_config.vocab_size} x hidden {text_config.hidden_size}, "
            f"the checkpoint's word embeddings are {list(words)}"
        )
    text_layers = _count_layers(state_dict, _BERT_IN + r"encoder\.layer\.(\d+)\.")
    if text_layers != text_config.num_hidden_layers:
        raise ConversionError(
            f"The text model folder has {text_config.num_hidden_layers} layers, the checkpoint {text_layers}"
        )
    if width // bottleneck != text_config.hidden_size // text_bottleneck:
        raise ConversionError(
            f"Adapter reduction differs between the towers ({width}/{bottleneck} vs "
            f"{text_config.hidden_size}/{text_bottleneck}); AltaConfig has one adapter_reduction_factor"
        )
    vision_config, reconstruction_image_size = infer_vision_config(
        state_dict, vision_num_attention_heads, decoder_num_attention_heads, layer_norm_eps, mask_ratio, norm_pix_loss
    )
    return AltaConfig(
        vision_config=vision_config,
        text_config=text_config.to_dict(),
        projection_dim=projection_dim,
        num_view_slots=2 * time_points,
        reconstruction_image_size=reconstruction_image_size,
        adapter_reduction_factor=width // bottleneck,
    )


def convert_checkpoint(
    checkpoint,
    text_model_dir,
    output_dir=None,
    *,
    vision_num_attention_heads: int | None = None,
    decoder_num_attention_heads: int | None = None,
    layer_norm_eps: float = LAYER_NORM_EPS,
    max_length: int = OFFICIAL_MAX_LENGTH,
) -> AltaForPreTraining:
    """Convert `checkpoint` (ALTA.pth) with the text geometry and vocabulary of `text_model_dir`; if `output_dir`
    is given, write the model (safetensors, in-memory key names, `auto_map`) and its processor (image processor and
    tokenizer) there."""
    state_dict, args = load_original_checkpoint(checkpoint)
    text_config, raw_text_config = read_text_config(text_model_dir)
    config = infer_alta_config(
        state_dict,
        text_config,
        vision_num_attention_heads,
        decoder_num_attention_heads,
        layer_norm_eps,
        # the training arguments, when the checkpoint carries them, say how the reconstruction was trained
        mask_ratio=float(getattr(args, "mask_ratio", 0.75)),
        norm_pix_loss=bool(getattr(args, "norm_pix_loss", True)),
    )
    if raw_text_config.get("projection_size", config.projection_dim) != config.projection_dim:
        raise ConversionError(
            f"{text_model_dir}: projection_size {raw_text_config['projection_size']} differs from the checkpoint's "
            f"projection width {config.projection_dim}"
        )
    converted = convert_state_dict(state_dict)

    model = AltaForPreTraining(config)
    tied_targets = set(model.all_tied_weights_keys)
    expected = set(model.state_dict()) - tied_targets
    missing, unexpected = sorted(expected - set(converted)), sorted(set(converted) - expected)
    if missing or unexpected:
        raise ConversionError(
            f"{checkpoint}: the converted weights do not match the model: missing {missing}, unexpected {unexpected}"
        )
    wrong_shapes = [
        f"{name}: checkpoint {list(tensor.shape)}, model {list(model.state_dict()[name].shape)}"
        for name, tensor in converted.items()
        if tensor.shape != model.state_dict()[name].shape
    ]
    if wrong_shapes:
        raise ConversionError(f"{checkpoint}: shape mismatches: {wrong_shapes}")
    result = model.load_state_dict(converted, strict=False)
    if set(result.missing_keys) - tied_targets or result.unexpected_keys:
        raise ConversionError(f"{checkpoint}: load_state_dict reported {result}")
    model.tie_weights()
    model.apply_trainable_policy()
    model.eval()

    if output_dir is not None:
        save_converted(model, build_tokenizer(text_model_dir, max_length), output_dir)
    return model


def save_converted(model, tokenizer, output_dir) -> None:
    """`save_pretrained` of the model and its processor (the default ALTA image processor with `tokenizer`,
    reports padded to the tokenizer's `model_max_length`) into `output_dir`, so that `AutoProcessor` and
    `transformers.pipeline` work on the folder at once. The folder is staged beside `output_dir` so that an
    interrupted conversion leaves no half-written folder."""
    # The converters are command-line tools, not remote code (no file copied into a model folder imports them), so
    # they may use the processing package; importing it here keeps `import modeling_alta` free of it.
    from alta_hf.processing import AltaImageProcessor, AltaProcessor

    processor = AltaProcessor(AltaImageProcessor(), tokenizer, max_length=tokenizer.model_max_length)
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    positions = model.config.text_config.max_position_embeddings
    if tokenizer.model_max_length > positions:  # longer prompts would index past the text tower's position table
        tokenizer.model_max_length = positions
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        output_dir.mkdir(exist_ok=True)
        for path in staging.iterdir():
            os.replace(path, output_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_tokenizer(text_model_dir, max_length: int = OFFICIAL_MAX_LENGTH) -> BertTokenizer:
    """The WordPiece tokenizer of a CXR-BERT folder (`vocab.txt`), padding/truncating to `max_length`."""
    text_model_dir = Path(text_model_dir)
    vocab = text_model_dir / "vocab.txt"
    if not vocab.is_file():
        raise ConversionError(f"{vocab}: not found (--text-model-dir must hold the CXR-BERT vocabulary)")
    settings_path = text_model_dir / "tokenizer_config.json"
    settings = json.loads(settings_path.read_text(encoding="utf-8")) if settings_path.is_file() else {}
    # `vocab=` (BertTokenizer silently ignores `vocab_file=` in transformers 5)
    return BertTokenizer(
        vocab=str(vocab), do_lower_case=settings.get("do_lower_case", True), model_max_length=max_length
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="official ALTA.pth")
    parser.add_argument("--text-model-dir", required=True, help="CXR-BERT folder (config.json, vocab.txt)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--vision-num-attention-heads", type=int, default=None,
                        help=f"default: width / {OFFICIAL_ENCODER_HEAD_WIDTH}")
    parser.add_argument("--decoder-num-attention-heads", type=int, default=None,
                        help=f"default: width / {OFFICIAL_DECODER_HEAD_WIDTH}")
    parser.add_argument("--layer-norm-eps", type=float, default=LAYER_NORM_EPS, help="image tower and decoder LayerNorm eps")
    parser.add_argument("--max-length", type=int, default=OFFICIAL_MAX_LENGTH, help="tokenizer model_max_length")
    args = parser.parse_args(argv)
    try:
        model = convert_checkpoint(
            args.checkpoint,
            args.text_model_dir,
            args.output_dir,
            vision_num_attention_heads=args.vision_num_attention_heads,
            decoder_num_attention_heads=args.decoder_num_attention_heads,
            layer_norm_eps=args.layer_norm_eps,
            max_length=args.max_length,
        )
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.output_dir}: {model.trainable_parameters_report()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
