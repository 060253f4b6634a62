"""Factories shared by the tests of every package (`from tests.factories import tiny_alta_config`)."""

from pathlib import Path

import torch
from transformers import BertTokenizer

from alta_hf.modeling_alta import AltaConfig, AltaForPreTraining
from alta_hf.processing.write_processor import main as write_processor_main

__all__ = [
    "TINY_TEXT_CONFIG",
    "assert_close_to_scale",
    "TINY_VISION_CONFIG",
    "perturb_parameters_",
    "save_tiny_alta_folder",
    "tiny_alta_config",
    "tiny_pretraining_batch",
]

# The golden `tiny` geometry (tests/fixtures/README.md): every hard-coded size of the official code kept
# (224 input, 16-px patches, 448 target with 32-px patches, 128-d projections, 4 view slots), widths shrunk.
TINY_VISION_CONFIG = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "layer_norm_eps": 1e-6,
    "decoder_hidden_size": 48,
    "decoder_num_hidden_layers": 1,
    "decoder_num_attention_heads": 3,
    "decoder_intermediate_size": 192,
}
TINY_TEXT_CONFIG = {
    "vocab_size": 200,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "pad_token_id": 0,
}


def tiny_alta_config(**overrides) -> AltaConfig:
    """An `AltaConfig` with the golden tiny geometry; `vision_config`/`text_config` dicts in `overrides` are merged
    into the tiny ones, every other keyword replaces the `AltaConfig` field."""
    vision = {**TINY_VISION_CONFIG, **overrides.pop("vision_config", {})}
    text = {**TINY_TEXT_CONFIG, **overrides.pop("text_config", {})}
    return AltaConfig(vision_config=vision, text_config=text, **overrides)


def tiny_pretraining_batch(config: AltaConfig, batch_size: int = 2, length: int = 16, seed: int = 0) -> dict:
    """Random inputs of `AltaForPreTraining.forward` for `config`, deterministic in `seed`: slots 1.. of row 1
    absent, reports padded, about half the word tokens corrupted to [MASK] with their labels. Special ids are
    those of the golden tiny vocabulary ([PAD]=0, [CLS]=2, [SEP]=3, [MASK]=4)."""
    generator = torch.Generator().manual_seed(seed)
    vision = config.vision_config
    slots, size, target = config.num_view_slots, vision.image_size, config.reconstruction_image_size
    pixel_values = torch.randn(batch_size, slots, vision.num_channels, size, size, generator=generator)
    view_mask = torch.ones(batch_size, slots, dtype=torch.long)
    if batch_size > 1:
        view_mask[1, 1:] = 0
    input_ids = torch.randint(5, config.text_config.vocab_size, (batch_size, length), generator=generator)
    input_ids[:, 0] = 2  # [CLS]
    attention_mask = torch.ones_like(input_ids)
    for row in range(batch_size):
        end = length - 1 - (row * 3) % (length // 2)
        input_ids[row, end] = 3  # [SEP]
        input_ids[row, end + 1 :] = 0
        attention_mask[row, end + 1 :] = 0
    corrupt = (torch.rand(input_ids.shape, generator=generator) < 0.5) & (input_ids > 4)
    return {
        "pixel_values": pixel_values,
        "view_mask": view_mask,
        "target_pixel_values": torch.randn(batch_size, vision.num_channels, target, target, generator=generator),
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mlm_input_ids": torch.where(corrupt, torch.full_like(input_ids, 4), input_ids),
        "mlm_labels": torch.where(corrupt, input_ids, torch.full_like(input_ids, -100)),
    }


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, name: str, tolerance: float = 1e-5) -> None:
    """max |actual - expected| <= tolerance * max(1, max |expected|): float32 rounding is relative to a tensor's
    largest entries (e.g. gradients of batches cut into parts whose reports are trimmed to different lengths)."""
    error = (actual - expected).abs().max().item()
    assert error <= tolerance * max(1.0, expected.abs().max().item()), f"{name}: max abs error {error:.2e}"


@torch.no_grad()
def perturb_parameters_(model: torch.nn.Module, std: float = 0.02, seed: int = 1) -> torch.nn.Module:
    """Add seeded N(0, std^2) noise to every parameter except the fixed sin-cos position tables (as the golden
    weights were made), so that zero-initialised paths (adapters, missing-view token, view/time embeddings) act."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        if name.endswith("position_embeddings") or name.endswith("decoder_pos_embed"):
            continue
        parameter.add_(torch.randn(parameter.shape, generator=generator) * std)
    return model


def save_tiny_alta_folder(out, tokenizer_dir) -> Path:
    """A trained-looking tiny `AltaForPreTraining` (seeded, perturbed) saved into `out` as the converters do (model +
    the tokenizer of `tokenizer_dir`), completed by write_processor; returns `out` as a Path."""
    torch.manual_seed(0)
    model = perturb_parameters_(AltaForPreTraining(tiny_alta_config()), std=0.05).eval()
    model.save_pretrained(out)
    BertTokenizer.from_pretrained(tokenizer_dir, model_max_length=128).save_pretrained(out)
    if write_processor_main([str(out)]) != 0:
        raise RuntimeError(f"write_processor failed on {out}")
    return Path(out)
