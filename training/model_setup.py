"""The start points of training: a fresh model from a config, a saved folder, or the converted pretrained towers."""

import json
import logging
from pathlib import Path

import torch
from transformers import BertTokenizer

from alta_hf.modeling_alta import AltaConfig, AltaForPreTraining
from alta_hf.modeling_alta.adapter_budget import lora_config_matching_bottleneck
from alta_hf.modeling_alta.convert_pretrained_towers import build_from_pretrained_towers
from alta_hf.processing import AltaImageProcessor, AltaProcessor, load_processor

__all__ = ["build_model_and_processor", "mimetic_attention_init_", "set_trainable_policy"]

logger = logging.getLogger(__name__)


def _processor(model_args, tokenizer_dir) -> AltaProcessor:
    # {"image_processor": {AltaImageProcessor settings}, other AltaProcessor settings (max_length, mlm_*, ...)}
    settings = json.loads(Path(model_args.processor_config).read_text()) if model_args.processor_config else {}
    image_settings = settings.pop("image_processor", {})
    return AltaProcessor(AltaImageProcessor(**image_settings), BertTokenizer.from_pretrained(tokenizer_dir), **settings)


def _fresh_processor(model_args, dataset_meta: dict) -> AltaProcessor:
    tokenizer_dir = model_args.tokenizer_dir or dataset_meta.get("tokenizer_dir")
    if tokenizer_dir is None:
        raise ValueError("a fresh model needs a tokenizer: give --tokenizer_dir (a folder with vocab.txt)")
    return _processor(model_args, tokenizer_dir)


def _lora_overrides(config) -> dict:
    """The config fields that swap the bottleneck adapters for LoRA at the same trainable-parameter count."""
    variant = lora_config_matching_bottleneck(config)
    logger.info("LoRA ablation: rank %d (matches the bottleneck adapters' parameter count)", variant.lora_rank)
    return {"adapter_type": "lora", "lora_rank": variant.lora_rank, "lora_alpha": variant.lora_alpha}


def _fresh_model(config_file: str, tokenizer, adapter_type: str | None) -> AltaForPreTraining:
    config = AltaConfig.from_json_file(config_file)
    text = config.text_config
    if text.vocab_size != len(tokenizer) or text.pad_token_id != tokenizer.pad_token_id:
        logger.info("text vocabulary from the tokenizer: %d tokens (config said %d)", len(tokenizer), text.vocab_size)
        text.vocab_size, text.pad_token_id = len(tokenizer), tokenizer.pad_token_id
    if adapter_type == "lora" and config.adapter_type != "lora":
        for name, value in _lora_overrides(config).items():
            setattr(config, name, value)
    elif adapter_type is not None:
        config.adapter_type = adapter_type
    return AltaForPreTraining(config)


@torch.no_grad()
def mimetic_attention_init_(layers, query_key_scale: float = 1.0, value_output_scale: float = 0.5) -> None:
    """Mimetic initialisation (Trockman & Kolter, ICML 2023) of self-attention layers trained from scratch.

    Each layer starts with W_q = W_k = sqrt(query_key_scale) * U and W_o = -value_output_scale * V^T (U, V random
    orthogonal): query-key products near a scaled identity make every token attend to tokens like itself, which with
    the sin-cos positions is a locality bias, and value-output near a negative identity is the pattern pretrained
    ViTs show. A from-scratch ViT otherwise spends hundreds of steps with near-uniform attention and an image
    embedding that barely depends on the image (the demo: zero-shot at chance after 368 steps). Draws from torch's
    global generator, so it follows the run's seed.
    """
    for layer in layers:
        attention = layer.attention
        width = attention.q_proj.weight.shape[0]
        query_key, value_output = (torch.linalg.qr(torch.randn(width, width))[0] for _ in range(2))
        attention.q_proj.weight.copy_(query_key_scale**0.5 * query_key)
        attention.k_proj.weight.copy_(query_key_scale**0.5 * query_key)
        attention.v_proj.weight.copy_(value_output)
        output = getattr(attention.o_proj, "base_layer", attention.o_proj)  # under an adapter wrapper
        output.weight.copy_(-value_output_scale * value_output.T)


def _model_from_towers(model_args) -> AltaForPreTraining:
    model, report = build_from_pretrained_towers(model_args.init_from_mrm, model_args.init_from_cxr_bert)
    if model_args.adapter_type == "lora":
        model, report = build_from_pretrained_towers(model_args.init_from_mrm, model_args.init_from_cxr_bert,
                                                     config_overrides=_lora_overrides(model.config))
    logger.info(report.summary())
    return model


def _check_geometry(model: AltaForPreTraining, processor: AltaProcessor) -> None:
    config, image_processor = model.config, processor.image_processor
    expected = (config.vision_config.image_size, config.reconstruction_image_size)
    actual = (image_processor.crop_size.height, image_processor.reconstruction_crop_size)
    if expected != actual:
        raise ValueError(f"the processor makes {actual[0]}-px slots and a {actual[1]}-px target, the model expects "
                         f"{expected[0]} and {expected[1]}: adjust --processor_config")
    if len(processor.tokenizer) > config.text_config.vocab_size:
        raise ValueError(f"the tokenizer has {len(processor.tokenizer)} tokens, the text tower "
                         f"{config.text_config.vocab_size}")


def set_trainable_policy(model: AltaForPreTraining, policy: str) -> None:
    """'alta': ALTA's trainable set. 'all': every weight except the fixed sin-cos position tables. 'heads': the
    projection heads and logit scales only (frozen towers without adapters: the study's lower bound)."""
    model.apply_trainable_policy()
    if policy == "heads":
        alta = model.alta
        heads = (alta.visual_projection, alta.visual_local_projection, alta.text_projection, alta.text_local_projection)
        keep = {id(p) for head in heads for p in head.parameters()} | {id(alta.logit_scale), id(alta.local_logit_scales)}
        for parameter in model.parameters():
            parameter.requires_grad_(id(parameter) in keep)
    elif policy == "all":
        fixed = {id(model.alta.vision_model.embeddings.position_embeddings), id(model.decoder.decoder_pos_embed)}
        for parameter in model.parameters():
            parameter.requires_grad_(id(parameter) not in fixed)
    elif policy != "alta":
        raise ValueError(f"unknown trainable policy {policy!r}; use 'alta', 'all' or 'heads'")


def build_model_and_processor(model_args, dataset_meta: dict) -> tuple[AltaForPreTraining, AltaProcessor]:
    if model_args.vision_attention_init != "default" and model_args.model_config is None:
        raise ValueError("--vision_attention_init applies to a fresh model (--model_config); a saved folder or "
                         "converted towers keep their trained weights")
    if model_args.model_config is not None:
        processor = _fresh_processor(model_args, dataset_meta)
        model = _fresh_model(model_args.model_config, processor.tokenizer, model_args.adapter_type)
        if model_args.vision_attention_init == "mimetic":
            mimetic_attention_init_(model.alta.vision_model.layers)
    elif model_args.model_name_or_path is not None:
        saved_type = AltaConfig.from_pretrained(model_args.model_name_or_path).adapter_type
        if model_args.adapter_type not in (None, saved_type):
            raise ValueError(f"--adapter_type {model_args.adapter_type}: {model_args.model_name_or_path} holds "
                             f"{saved_type} adapters (a saved folder keeps its own); leave --adapter_type out")
        model = AltaForPreTraining.from_pretrained(model_args.model_name_or_path)
        processor = load_processor(model_args.model_name_or_path)
    else:
        model = _model_from_towers(model_args)
        # the towers' geometry may differ from the official one (the demo towers): --processor_config sets it
        processor = _processor(model_args, model_args.init_from_cxr_bert)
    _check_geometry(model, processor)
    set_trainable_policy(model, model_args.trainable_policy)
    if model_args.gradient_checkpointing:
        model.activation_checkpointing_enable()  # transformers 5's name of gradient_checkpointing_enable
    return model, processor
