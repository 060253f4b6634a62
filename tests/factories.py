"""Factories shared by the tests of every package (`from factories import tiny_alta_config`; pytest puts `tests/`
on `sys.path` because it has no `__init__.py`)."""

from modeling_alta import AltaConfig

__all__ = ["TINY_TEXT_CONFIG", "TINY_VISION_CONFIG", "tiny_alta_config"]

# The golden `tiny` geometry (../shared/golden/README.md): every hard-coded size of the official code kept
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
