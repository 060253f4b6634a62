"""AltaConfig: the official base geometry by default, ALTA defaults for partial sub-configs, validation, JSON."""

import math
from pathlib import Path

import pytest
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, BertConfig, ViTMAEConfig

from alta_hf.modeling_alta import AltaConfig
from tests.factories import tiny_alta_config

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_default_is_the_official_base_geometry():
    config = AltaConfig()
    vision, text = config.vision_config, config.text_config
    assert isinstance(vision, ViTMAEConfig) and isinstance(text, BertConfig)
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads, vision.intermediate_size) == (
        768, 12, 12, 3072)
    assert vision.layer_norm_eps == 1e-6 and vision.hidden_act == "gelu" and vision.qkv_bias
    assert (vision.image_size, vision.patch_size, vision.num_channels) == (224, 16, 3)
    assert (vision.decoder_hidden_size, vision.decoder_num_hidden_layers, vision.decoder_num_attention_heads,
            vision.decoder_intermediate_size) == (768, 4, 6, 3072)
    assert vision.mask_ratio == 0.75 and vision.norm_pix_loss is True
    assert (text.vocab_size, text.hidden_size, text.num_hidden_layers, text.num_attention_heads,
            text.intermediate_size, text.layer_norm_eps) == (30522, 768, 12, 12, 3072, 1e-12)
    assert config.projection_dim == 128 and config.projection_layer_norm_eps == 1e-12
    assert config.num_view_slots == 4 and config.num_patches == 196
    assert config.reconstruction_image_size == 448 and config.reconstruction_patch_size == 32
    assert config.logit_scale_init_value == pytest.approx(math.log(1 / 0.07))
    assert config.local_logit_scale_init_value == pytest.approx(math.log(1 / 0.07))
    assert config.logit_scale_max == pytest.approx(math.log(100))
    assert (config.global_loss_weight, config.local_loss_weight, config.reconstruction_loss_weight,
            config.mlm_loss_weight) == (1.0, 1.0, 1.0, 1.0)
    assert (config.adapter_type, config.adapter_reduction_factor, config.adapter_parallel_scale) == ("bottleneck", 4, 0.5)


def test_partial_sub_configs_take_the_alta_defaults():
    config = AltaConfig(vision_config={"hidden_size": 64, "num_attention_heads": 4}, text_config={"vocab_size": 200})
    assert config.vision_config.hidden_size == 64
    assert config.vision_config.layer_norm_eps == 1e-6  # not ViTMAEConfig's 1e-12
    assert config.vision_config.decoder_num_hidden_layers == 4
    assert config.text_config.vocab_size == 200 and config.text_config.hidden_size == 768


def test_json_round_trip_through_auto_config(tmp_path):
    config = tiny_alta_config(local_loss_weight=0.5, adapter_type="lora", lora_rank=4)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "AltaConfig"
    assert {**loaded.to_dict(), "_name_or_path": ""} == config.to_dict()
    assert loaded.vision_config.decoder_hidden_size == 48 and loaded.text_config.vocab_size == 200


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_view_slots": 3}, "num_view_slots"),
        ({"reconstruction_image_size": 300}, "reconstruction_image_size"),
        ({"vision_config": {"image_size": 225}}, "divisible by patch_size"),
        ({"adapter_reduction_factor": 3}, "adapter_reduction_factor"),
        ({"adapter_type": "prefix"}, "adapter_type"),
    ],
)
def test_invalid_settings_raise(overrides, message):
    with pytest.raises(StrictDataclassError, match=message):
        tiny_alta_config(**overrides)


@pytest.mark.parametrize("name, expected", [("alta_base", AltaConfig), ("alta_tiny", tiny_alta_config)])
def test_shipped_model_configs(name, expected):
    """`configs/model/*.json` (for training configurations) describe the base and the golden tiny geometry."""
    loaded = AltaConfig.from_json_file(str(REPO_ROOT / "configs" / "model" / f"{name}.json"))
    assert loaded.to_dict() == expected().to_dict()
