"""Start points of training: the mimetic attention initialisation of a fresh image tower; a saved folder keeps its
adapter type."""

import pytest
import torch

from tests.training_setup import write_tiny_configs
from alta_hf.training.arguments import parse_arguments
from alta_hf.training.model_setup import build_model_and_processor, mimetic_attention_init_


def _fresh(tmp_path, tokenizer_dir, *extra):
    model_config, processor_config = write_tiny_configs(tmp_path / "configs")
    model_args, _, _ = parse_arguments([
        "--model_config", str(model_config), "--processor_config", str(processor_config),
        "--tokenizer_dir", str(tokenizer_dir), "--trainable_policy", "all",
        "--train_dataset", str(tmp_path), "--output_dir", str(tmp_path / "run"), *extra,
    ])
    torch.manual_seed(0)
    return build_model_and_processor(model_args, {})


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "heart", "lungs", "clear", "effusion", "no"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    return folder


def test_mimetic_init_makes_query_key_and_value_output_products_scaled_identities(tmp_path, tokenizer_dir):
    model, _ = _fresh(tmp_path, tokenizer_dir)
    layers = model.alta.vision_model.layers
    width = layers[0].attention.q_proj.weight.shape[0]
    torch.manual_seed(1)
    mimetic_attention_init_(layers, query_key_scale=0.8, value_output_scale=0.3)
    for layer in layers:
        attention = layer.attention
        output = attention.o_proj.base_layer  # the bottleneck adapter wraps the output projection
        identity = torch.eye(width)
        # scores use x W_q^T (x W_k^T)^T = x (W_q^T W_k) x^T; the attended values leave through W_o W_v
        torch.testing.assert_close(attention.q_proj.weight.T @ attention.k_proj.weight, 0.8 * identity,
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(output.weight @ attention.v_proj.weight, -0.3 * identity, atol=1e-5, rtol=0)
    # a random rotation, not the identity itself: heads see different subspaces
    assert layers[0].attention.q_proj.weight.diagonal().abs().max() < 0.9


def test_the_training_argument_applies_it_to_the_image_tower_only(tmp_path, tokenizer_dir):
    default, _ = _fresh(tmp_path / "a", tokenizer_dir)
    mimetic, _ = _fresh(tmp_path / "b", tokenizer_dir, "--vision_attention_init", "mimetic")
    attention = mimetic.alta.vision_model.layers[0].attention
    width = attention.q_proj.weight.shape[0]
    torch.testing.assert_close(attention.q_proj.weight.T @ attention.k_proj.weight, torch.eye(width),
                               atol=1e-5, rtol=0)
    assert torch.equal(attention.q_proj.weight, attention.k_proj.weight)
    default_attention = default.alta.vision_model.layers[0].attention
    assert not torch.equal(default_attention.q_proj.weight, default_attention.k_proj.weight)
    for name, parameter in mimetic.alta.text_model.named_parameters():
        assert torch.equal(parameter, dict(default.alta.text_model.named_parameters())[name]), name


def test_a_saved_model_refuses_it(tmp_path, tokenizer_dir):
    model, processor = _fresh(tmp_path, tokenizer_dir)
    model.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    model_args, _, _ = parse_arguments([
        "--model_name_or_path", str(tmp_path / "saved"), "--vision_attention_init", "mimetic",
        "--train_dataset", str(tmp_path), "--output_dir", str(tmp_path / "run"),
    ])
    with pytest.raises(ValueError, match="applies to a fresh model"):
        build_model_and_processor(model_args, {})


@pytest.mark.parametrize("saved_type, asked", [("lora", "bottleneck"), ("bottleneck", "lora")])
def test_a_saved_model_refuses_another_adapter_type(tmp_path, tokenizer_dir, saved_type, asked):
    model, processor = _fresh(tmp_path, tokenizer_dir, "--adapter_type", saved_type)
    assert model.config.adapter_type == saved_type
    model.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")

    def start(*extra):
        model_args, _, _ = parse_arguments(["--model_name_or_path", str(tmp_path / "saved"), *extra,
                                            "--train_dataset", str(tmp_path), "--output_dir", str(tmp_path / "run")])
        return build_model_and_processor(model_args, {})[0]

    with pytest.raises(ValueError, match=f"--adapter_type {asked}: .* holds {saved_type} adapters"):
        start("--adapter_type", asked)
    assert start("--adapter_type", saved_type).config.adapter_type == saved_type
    assert start().config.adapter_type == saved_type
