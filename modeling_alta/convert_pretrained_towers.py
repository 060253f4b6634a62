"""Build ALTA's starting point from its two pretrained parts: an MRM checkpoint and a CXR-BERT (or other BERT) folder.

    python -m alta_hf.modeling_alta.convert_pretrained_towers --mrm MRM.pth --cxr-bert BiomedVLP-CXR-BERT-specialized \\
        --output-dir alta-init

- `MRM.pth` (torch pickle, `checkpoint['model']`, timm/MAE names, fused qkv) gives the ViTMAE image tower and the
  reconstruction decoder. MRM's own small report BERT (`bert_encoder.model.*`, `bert_mlp.*`) is ignored by design,
  as ALTA ignores it. A checkpoint without the decoder is refused: ALTA keeps the decoder's attention and MLP
  weights frozen, so random ones would never be trained.
- The CXR-BERT folder (`config.json`, `vocab.txt`, `pytorch_model.bin` or `model.safetensors` with `bert.*`,
  `cls.predictions.*`, `cls_projection_head.*`) gives the text tower, its masked-LM head and the text projection
  (the local text projection starts as a copy of it, as in ALTA). Any BERT-family folder may stand in: when it has
  no MLM head or projection head, those start fresh (and are listed).
- Everything else gets ALTA's initialisation: identity adapters (zero up-projection), zero view/time embeddings
  and missing-view token, logit scales log(1/0.07), fresh image projection heads, and a random (xavier-uniform,
  frozen) `image_to_text` map, which the official model never trains either.

Checkpoints are read with `torch.load(weights_only=True)` (a training checkpoint's `argparse.Namespace` is the
only allow-listed class). Every expected weight must be present and every key of the sources must be used or be
ignored by design; otherwise the conversion fails listing the offending keys.
"""

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from .configuration_alta import AltaConfig
from .convert_original_alta import (
    LAYER_NORM_EPS,
    OFFICIAL_MAX_LENGTH,
    ConversionError,
    build_tokenizer,
    convert_state_dict,
    infer_vision_config,
    load_original_checkpoint,
    map_original_key,
    read_text_config,
    save_converted,
)
from .modeling_alta import AltaForPreTraining

__all__ = [
    "IGNORED_MRM_KEYS",
    "IGNORED_TEXT_KEYS",
    "TowerConversionReport",
    "build_from_pretrained_towers",
    "convert_mrm_state_dict",
    "convert_text_state_dict",
    "load_text_state_dict",
    "main",
]

# Source keys ALTA does not use, with the reason (`re.fullmatch` patterns).
IGNORED_MRM_KEYS = {
    r"bert_encoder\.model\..+": "MRM's own report BERT (ALTA uses CXR-BERT)",
    r"bert_mlp\.(weight|bias)": "MRM's image->report-BERT map (ALTA uses a new image_to_text map)",
}
IGNORED_TEXT_KEYS = {
    r"bert\.pooler\..+": "BERT pooler (ALTA uses the [CLS] output through the projection head)",
    r"cls\.seq_relationship\..+": "next-sentence head",
    r".+\.(position_ids|token_type_ids)": "non-persistent buffer of older transformers versions",
}
_DECODER_PROBE = "decoder_blocks.0.attn.qkv.weight"
# Model parameters whose ALTA initialisation is kept: adapters (bottleneck or LoRA) and everything outside the towers
# that neither source holds.
_ALTA_INIT = (
    r"alta\.(vision_model|text_model)\..*\.(bottleneck_(down|up)|lora_[A-Za-z_]+)\..+",
    r"alta\.(visual_projection|visual_local_projection|text_local_projection)\..+",
    r"alta\.(logit_scale|local_logit_scales|view_embedding|temporal_embedding)",
    r"image_to_text\.(weight|bias)",
    r"missing_view_token",
)
# Parts a BERT folder other than CXR-BERT may lack entirely (they then start fresh); CXR-BERT must have both.
_OPTIONAL_TEXT_PARTS = (r"mlm_head\.predictions\.(transform\..+|bias)", r"alta\.text_(local_)?projection\..+")


def _matching(patterns, key: str) -> str | None:
    return next((pattern for pattern in patterns if re.fullmatch(pattern, key)), None)


@dataclass
class TowerConversionReport:
    """What a conversion took from each source, ignored by design, and initialised."""

    from_mrm: list[str] = field(default_factory=list)
    from_text: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    initialised: list[str] = field(default_factory=list)
    mrm_args: dict = field(default_factory=dict)

    def summary(self) -> str:
        reasons = {}
        for reason in self.ignored.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        lines = [
            f"from MRM: {len(self.from_mrm)} tensors; from the text model: {len(self.from_text)} tensors",
            f"ALTA initialisation: {len(self.initialised)} tensors",
            *(f"ignored by design: {count} keys ({reason})" for reason, count in reasons.items()),
        ]
        return "\n".join(lines)


def convert_mrm_state_dict(state_dict: dict) -> tuple[dict, dict]:
    """MRM (or any timm/MAE image tower + decoder) state dict -> (`AltaForPreTraining` tensors, ignored keys with
    reasons). Raises `ConversionError` listing every key that is neither image tower/decoder nor ignored by design."""
    usable, ignored, unexpected = {}, {}, []
    for key, tensor in state_dict.items():
        pattern = _matching(IGNORED_MRM_KEYS, key)
        if pattern:
            ignored[key] = IGNORED_MRM_KEYS[pattern]
            continue
        try:
            names = map_original_key(key)
        except KeyError:
            names = []
        # an MRM file holds the bare towers: adapters, heads or text weights mean it is something else (an ALTA.pth)
        if not names or not all(
            (name.startswith("alta.vision_model.") and ".bottleneck_" not in name) or name.startswith("decoder.")
            for name in names
        ):
            unexpected.append(key)
            continue
        usable[key] = tensor
    if unexpected:
        raise ConversionError(
            f"{len(unexpected)} unexpected key(s) in the MRM state dict (neither the image tower/decoder nor ignored "
            f"by design; an ALTA.pth is converted with convert_original_alta): {sorted(unexpected)}"
        )
    return convert_state_dict(usable), ignored


def load_text_state_dict(text_model_dir) -> dict:
    """The weights of a BERT folder: `model.safetensors`, or `pytorch_model.bin` read with `weights_only=True`."""
    text_model_dir = Path(text_model_dir)
    safetensors_path, pickle_path = text_model_dir / "model.safetensors", text_model_dir / "pytorch_model.bin"
    if safetensors_path.is_file():
        return load_file(safetensors_path)
    if pickle_path.is_file():
        return load_original_checkpoint(pickle_path)[0]
    raise ConversionError(
        f"{text_model_dir}: no model.safetensors or pytorch_model.bin (sharded checkpoints: merge them first)"
    )


def convert_text_state_dict(state_dict: dict) -> tuple[dict, dict]:
    """BERT-folder state dict (`BertForMaskedLM`/CXR-BERT names `bert.*`, `cls.predictions.*`,
    `cls_projection_head.*`, or bare `BertModel` names) -> (`AltaForPreTraining` tensors, ignored keys with reasons).
    The local text projection is a copy of the global one, as ALTA starts it."""
    if not any(key.startswith("bert.") for key in state_dict):
        # a bare BertModel checkpoint (e.g. sentence-transformers folders) has no `bert.` prefix
        state_dict = {(f"bert.{k}" if k.split(".", 1)[0] in ("embeddings", "encoder", "pooler") else k): v
                      for k, v in state_dict.items()}
    usable, ignored, unexpected = {}, {}, []
    for key, tensor in state_dict.items():
        pattern = _matching(IGNORED_TEXT_KEYS, key)
        if pattern:
            ignored[key] = IGNORED_TEXT_KEYS[pattern]
            continue
        # CXR-BERT is ALTA's `bert_encoder`: its names are the official ones without that prefix
        try:
            names = map_original_key("bert_encoder." + key)
        except KeyError:
            names = None
        if names is None or any(not n.startswith(("alta.text_", "mlm_head.")) for n in names):
            unexpected.append(key)
            continue
        usable["bert_encoder." + key] = tensor
    if unexpected:
        raise ConversionError(f"{len(unexpected)} unexpected key(s) in the text model's weights: {sorted(unexpected)}")
    try:
        converted = convert_state_dict(usable)
    except ConversionError as error:
        raise ConversionError(str(error).replace("bert_encoder.", "")) from error
    for name, tensor in list(converted.items()):
        if name.startswith("alta.text_projection."):
            local = name.replace("alta.text_projection.", "alta.text_local_projection.")
            converted.setdefault(local, tensor.clone())
    return converted, ignored


def _text_projection_dim(text_weights: dict) -> int | None:
    weight = text_weights.get("alta.text_projection.dense_to_output.weight")
    return None if weight is None else weight.shape[0]


def _merge_config(base: dict, overrides: dict | None) -> dict:
    overrides = dict(overrides or {})
    merged = {**base}
    for sub in ("vision_config", "text_config"):
        merged[sub] = {**base[sub], **overrides.pop(sub, {})}
    merged.update(overrides)
    return merged


def build_from_pretrained_towers(
    mrm_checkpoint,
    text_model_dir,
    *,
    config_overrides: dict | None = None,
    vision_num_attention_heads: int | None = None,
    decoder_num_attention_heads: int | None = None,
    layer_norm_eps: float = LAYER_NORM_EPS,
    seed: int = 0,
) -> tuple[AltaForPreTraining, TowerConversionReport]:
    """
    An `AltaForPreTraining` ready to train: image tower and decoder from `mrm_checkpoint` (MRM.pth), text tower, MLM
    head and text projections from `text_model_dir` (a CXR-BERT or other BERT folder), the rest at ALTA's
    initialisation (drawn from `seed`), trainable set applied, in eval mode.

    The image geometry comes from the tensors (head counts: `*_num_attention_heads`, default width/64 in the encoder
    and width/128 in the decoder, MRM's 12 and 6), the text geometry from the folder's `config.json`. With a training
    checkpoint, its `args.mask_ratio`/`args.norm_pix_loss` are kept. `config_overrides` replaces `AltaConfig` fields
    (`vision_config`/`text_config` dicts are merged), e.g. `{"adapter_type": "lora", "lora_rank": 193}`.

    Raises:
        ConversionError: unreadable or unsafe pickle, missing decoder, unexpected or missing keys, shape mismatches.
    """
    mrm_state_dict, args = load_original_checkpoint(mrm_checkpoint)
    if not any(key.startswith("decoder_") for key in mrm_state_dict) or _DECODER_PROBE not in mrm_state_dict:
        raise ConversionError(
            f"{mrm_checkpoint}: no complete reconstruction decoder (e.g. {_DECODER_PROBE!r} is absent). ALTA starts "
            "from MRM's decoder and keeps its attention and MLP weights frozen, so they cannot be initialised at "
            "random; use the full MRM checkpoint (ViT-only files such as MAE's encoder release lack the decoder)"
        )
    image_weights, ignored = convert_mrm_state_dict(mrm_state_dict)
    text_config, raw_text_config = read_text_config(text_model_dir)
    text_weights, ignored_text = convert_text_state_dict(load_text_state_dict(text_model_dir))
    ignored.update(ignored_text)

    vision_config, reconstruction_image_size = infer_vision_config(
        mrm_state_dict, vision_num_attention_heads, decoder_num_attention_heads, layer_norm_eps,
        mask_ratio=float(getattr(args, "mask_ratio", 0.75)),
        norm_pix_loss=bool(getattr(args, "norm_pix_loss", True)),
        what="MRM",
    )
    base = {
        "vision_config": vision_config,
        "text_config": text_config.to_dict(),
        "reconstruction_image_size": reconstruction_image_size,
    }
    projection_dim = _text_projection_dim(text_weights)
    if projection_dim is not None:
        requested = (config_overrides or {}).get("projection_dim", projection_dim)
        if requested != projection_dim:
            raise ConversionError(
                f"{text_model_dir}: its projection head outputs {projection_dim} features, projection_dim "
                f"{requested} was asked for"
            )
        base["projection_dim"] = projection_dim
    try:
        config = AltaConfig(**_merge_config(base, config_overrides))
    except (TypeError, ValueError) as error:
        raise ConversionError(f"Invalid configuration for the converted model: {error}") from error

    # the fresh parts are drawn from `seed` without touching the caller's random state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AltaForPreTraining(config)
        # the official `bert_embed`: a frozen Linear at MAE's initialisation (xavier-uniform, zero bias)
        torch.nn.init.xavier_uniform_(model.image_to_text.weight)
        torch.nn.init.zeros_(model.image_to_text.bias)
    report = TowerConversionReport(
        from_mrm=sorted(image_weights), from_text=sorted(text_weights), ignored=ignored,
        mrm_args=dict(vars(args)) if args is not None else {},
    )
    optional = () if raw_text_config.get("model_type") == "cxr-bert" else _OPTIONAL_TEXT_PARTS
    _load_strictly(model, image_weights, text_weights, report, optional, (mrm_checkpoint, text_model_dir))
    return model.eval(), report


def _to_model_wrapping(weights: dict, model_state: dict) -> dict:
    """The key map names tower weights as wrapped by the bottleneck adapters (`....base_layer....`); LoRA wraps other
    modules (q/v, not the output projection). Rename each weight to the wrapping the model has."""
    renamed = {}
    for name, tensor in weights.items():
        if name not in model_state:
            bare = name.replace(".base_layer.", ".")
            parts = bare.split(".")
            candidates = [bare] + [".".join(parts[:i] + ["base_layer"] + parts[i:]) for i in range(1, len(parts))]
            name = next((candidate for candidate in candidates if candidate in model_state), name)
        renamed[name] = tensor
    return renamed


def _load_strictly(model, image_weights, text_weights, report, optional_text_parts, sources) -> None:
    """Load both sources into `model`; every model tensor must come from a source or be ALTA-initialised, and an
    optional text part (a head) is taken whole or not at all."""
    mrm_checkpoint, text_model_dir = sources
    model_state = model.state_dict()
    image_weights = _to_model_wrapping(image_weights, model_state)
    text_weights = _to_model_wrapping(text_weights, model_state)
    tied = set(model.all_tied_weights_keys)
    weights = {**image_weights, **text_weights}
    unexpected = sorted(set(weights) - set(model_state))
    wrong_shapes = [
        f"{name}: source {list(tensor.shape)}, model {list(model_state[name].shape)}"
        for name, tensor in weights.items()
        if name in model_state and tensor.shape != model_state[name].shape
    ]
    # a head the text source holds in part is an error, not a fresh head
    partial_heads = {
        pattern for pattern in optional_text_parts
        if any(re.fullmatch(pattern, name) for name in text_weights)
    }
    missing_image, missing_text = [], []
    for name in sorted(set(model_state) - set(weights) - tied):
        optional = _matching(optional_text_parts, name)
        if _matching(_ALTA_INIT, name) or (optional and optional not in partial_heads):
            report.initialised.append(name)
        elif name.startswith(("alta.vision_model.", "decoder.")):
            missing_image.append(name)
        else:
            missing_text.append(name)
    problems = []
    if missing_image:
        problems.append(f"{mrm_checkpoint} lacks {missing_image}")
    if missing_text:
        problems.append(f"{text_model_dir} lacks {missing_text}")
    if unexpected:
        problems.append(f"weights the model has no place for (different layer counts?): {unexpected}")
    if wrong_shapes:
        problems.append(f"shape mismatches: {wrong_shapes}")
    if problems:
        raise ConversionError("Cannot build ALTA from the pretrained towers: " + "; ".join(problems))
    result = model.load_state_dict(weights, strict=False)
    if result.unexpected_keys:
        raise ConversionError(f"load_state_dict reported unexpected keys {result.unexpected_keys}")
    model.tie_weights()
    model.apply_trainable_policy()


def _parse_overrides(value: str | None) -> dict | None:
    if value is None:
        return None
    text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConversionError(f"--config-overrides is not valid JSON ({error}): {value!r}") from error
    if not isinstance(overrides, dict):
        raise ConversionError(f"--config-overrides must be a JSON object, got {value!r}")
    return overrides


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mrm", required=True, help="MRM.pth (torch checkpoint with 'model')")
    parser.add_argument("--cxr-bert", required=True, help="CXR-BERT (or other BERT) folder: config.json, vocab.txt, weights")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--config-overrides", default=None,
                        help='AltaConfig fields as JSON, or @file.json, e.g. \'{"adapter_type": "lora", "lora_rank": 193}\'')
    parser.add_argument("--vision-num-attention-heads", type=int, default=None, help="default: width / 64 (MRM: 12)")
    parser.add_argument("--decoder-num-attention-heads", type=int, default=None, help="default: width / 128 (MRM: 6)")
    parser.add_argument("--layer-norm-eps", type=float, default=LAYER_NORM_EPS, help="image tower and decoder LayerNorm eps")
    parser.add_argument("--max-length", type=int, default=OFFICIAL_MAX_LENGTH, help="tokenizer model_max_length")
    parser.add_argument("--seed", type=int, default=0, help="seed of the freshly initialised parts")
    args = parser.parse_args(argv)
    try:
        model, report = build_from_pretrained_towers(
            args.mrm,
            args.cxr_bert,
            config_overrides=_parse_overrides(args.config_overrides),
            vision_num_attention_heads=args.vision_num_attention_heads,
            decoder_num_attention_heads=args.decoder_num_attention_heads,
            layer_norm_eps=args.layer_norm_eps,
            seed=args.seed,
        )
        save_converted(model, build_tokenizer(args.cxr_bert, args.max_length), args.output_dir)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.summary())
    print(f"wrote {args.output_dir}: {model.trainable_parameters_report()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
