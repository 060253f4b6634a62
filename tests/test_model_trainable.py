"""The ALTA trainable set (docs/model.md) and its exact counts, at the base geometry (meta device) and the tiny one."""

import json

import pytest
import torch
from torch import nn

from alta_hf.modeling_alta import AltaConfig, AltaForPreTraining, AltaModel
from tests.factories import tiny_alta_config


@pytest.fixture(scope="module")
def base_model():
    with torch.device("meta"):
        return AltaForPreTraining(AltaConfig())


def _module_counts(model, prefix):
    total = trainable = 0
    for name, parameter in model.named_parameters():
        if name.startswith(prefix):
            total += parameter.numel()
            trainable += parameter.numel() if parameter.requires_grad else 0
    return total, trainable


def test_base_geometry_counts_match_the_official_model(base_model, capsys):
    assert base_model.trainable_parameter_counts() == (18_333_502, 242_177_854)
    base_model.print_trainable_parameters()
    assert capsys.readouterr().out.strip() == (
        "trainable params: 18,333,502 || all params: 242,177,854 || trainable%: 7.5703"
    )
    tensors = [p.requires_grad for _, p in base_model.named_parameters()]
    # the official model has 351 trainable / 282 frozen tensors; q, k, v are three tensors here instead of one
    # fused qkv (12 ViT + 4 decoder layers x 2 tensors x 2 extra), the local scales one tensor instead of three
    assert (sum(tensors), len(tensors) - sum(tensors)) == (351 - 2, 282 + 64)


@pytest.mark.parametrize(
    "prefix, total, trainable",
    [
        ("alta.vision_model.layers.", 92_155_392, 7_137_792),
        ("alta.text_model.", 115_992_576, 7_139_328),
        ("decoder.decoder_layers.", 28_351_488, 12_288),
        ("decoder.decoder_pred.", 2_362_368, 2_362_368),
        ("mlm_head.", 622_650, 622_650),
        ("decoder.decoder_embed.", 590_592, 590_592),
        ("alta.visual_projection.", 115_200, 115_200),
        ("alta.text_local_projection.", 115_200, 115_200),
        ("alta.vision_model.embeddings.patch_embeddings.", 590_592, 0),
        ("image_to_text.", 590_592, 0),
        ("missing_view_token", 150_528, 0),
        ("alta.vision_model.embeddings.position_embeddings", 151_296, 0),
        ("decoder.decoder_pos_embed", 151_296, 0),
        ("alta.vision_model.embeddings.cls_token", 768, 768),
        ("decoder.mask_token", 768, 768),
        ("alta.temporal_embedding", 1_536, 1_536),
        ("alta.view_embedding", 1_536, 1_536),
        ("alta.vision_model.layernorm.", 1_536, 1_536),
        ("decoder.decoder_norm.", 1_536, 1_536),
        ("alta.logit_scale", 1, 1),
        ("alta.local_logit_scales", 3, 3),
    ],
)
def test_base_geometry_counts_per_module(base_model, prefix, total, trainable):
    """The per-module table of the golden README (official names mapped to ours)."""
    assert _module_counts(base_model, prefix) == (total, trainable)


def test_adapters_alone(base_model):
    adapters = sum(p.numel() for n, p in base_model.named_parameters() if "bottleneck_" in n)
    assert adapters == 2 * 12 * 2 * (768 * 192 + 192 + 192 * 768 + 768)  # 14.2M
    assert all(p.requires_grad for n, p in base_model.named_parameters() if "bottleneck_" in n)


def test_tiny_counts_match_the_golden_manifest(golden_dir):
    counts = json.loads((golden_dir / "manifest.json").read_text())["param_counts"]
    model = AltaForPreTraining(tiny_alta_config())
    assert model.trainable_parameter_counts() == (counts["trainable_params"], counts["total_params"])


def test_policy_is_structural_and_reapplied():
    model = AltaForPreTraining(tiny_alta_config())
    expected = {name for name, p in model.named_parameters() if p.requires_grad}
    model.requires_grad_(True)
    model.apply_trainable_policy()
    assert {name for name, p in model.named_parameters() if p.requires_grad} == expected
    # every LayerNorm of the towers and the decoder is trainable, no Linear weight of attention/MLP is
    for name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm):
            assert all(p.requires_grad for p in module.parameters()), name
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert "alta.vision_model.layers.0.attention.q_proj.weight" in frozen
    assert "alta.text_model.encoder.layer.1.intermediate.dense.weight" in frozen
    assert "alta.text_model.embeddings.word_embeddings.weight" in frozen
    assert "mlm_head.predictions.bias" not in frozen and "image_to_text.weight" in frozen
    assert model.mlm_head.predictions.decoder.weight is model.alta.text_model.embeddings.word_embeddings.weight
    assert model.mlm_head.predictions.decoder.bias is model.mlm_head.predictions.bias


def test_inference_model_counts():
    with torch.device("meta"):
        model = AltaModel(AltaConfig())
    # the pre-training model minus the decoder (31,458,048), the MLM head, the image->text map and the
    # missing-view token; trainable minus the decoder's and the MLM head's trainable parts
    assert model.trainable_parameter_counts() == (14_743_300, 209_356_036)
    assert 242_177_854 - 31_458_048 - 622_650 - 590_592 - 150_528 == 209_356_036
    assert 18_333_502 - (12_288 + 2_362_368 + 590_592 + 768 + 1_536) - 622_650 == 14_743_300
