"""`BottleneckAdapterConfig()` without targets on plain transformers models: ALTA's placement is picked from the base
model's `model_type` (ViTMAE, ViT, BERT), as peft's own methods do, and round-trips through the standard PEFT API."""

import pytest
import torch
from peft import PeftModel, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertModel,
    GPT2Config,
    GPT2Model,
    ViTConfig,
    ViTMAEConfig,
    ViTMAEForPreTraining,
    ViTMAEModel,
    ViTModel,
)

from alta_hf.modeling_alta import BottleneckAdapterConfig

VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
              patch_size=16)
TEXT = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=16)


def _vit_mae():
    return ViTMAEModel(ViTMAEConfig(**VISION, mask_ratio=0.0))


def _vision_inputs():
    return {"pixel_values": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))}


def _text_inputs():
    ids = torch.randint(5, 50, (2, 7), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _vit_names(prefix=""):
    return ({f"{prefix}layers.{i}.attention.o_proj" for i in range(2)}, {f"{prefix}layers.{i}.mlp" for i in range(2)})


def _bert_names(prefix=""):
    return ({f"{prefix}encoder.layer.{i}.attention.output" for i in range(2)},
            {f"{prefix}encoder.layer.{i}.output" for i in range(2)})


CASES = {
    "vit_mae": (_vit_mae, _vision_inputs, _vit_names()),
    "vit": (lambda: ViTModel(ViTConfig(**VISION), add_pooling_layer=False), _vision_inputs, _vit_names()),
    "bert": (lambda: BertModel(BertConfig(**TEXT), add_pooling_layer=False), _text_inputs, _bert_names()),
    # a tower inside a larger model: the MAE decoder's `decoder_layers` get nothing
    "vit_mae_pretraining": (lambda: ViTMAEForPreTraining(ViTMAEConfig(**VISION, mask_ratio=0.0)), _vision_inputs,
                            _vit_names("vit.")),
    "bert_mlm": (lambda: BertForMaskedLM(BertConfig(**TEXT)), _text_inputs, _bert_names("bert.")),
}


def _output(model, inputs):
    torch.manual_seed(3)  # ViTMAE draws its (here empty) mask noise
    out = model(**inputs)
    return out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state


def _randomise_adapters(model):
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "bottleneck_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


@pytest.mark.parametrize("case", sorted(CASES))
def test_default_placement_and_peft_round_trip(case, tmp_path):
    build, make_inputs, (sequential, parallel) = CASES[case]
    inputs = make_inputs()
    torch.manual_seed(0)
    base = build().eval()
    with torch.no_grad():
        expected_base = _output(base, inputs)

    model = get_peft_model(base, BottleneckAdapterConfig())
    layers = {name.removeprefix("base_model.model."): module for name, module in model.named_modules()
              if isinstance(module, BaseTunerLayer)}
    assert set(layers) == sequential | parallel
    assert {name for name, layer in layers.items() if layer.bottleneck_parallel["default"]} == parallel
    assert {layer.bottleneck_scale["default"] for name, layer in layers.items() if name in parallel} == {0.5}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("bottleneck_" in name for name in trainable)

    with torch.no_grad():
        assert torch.equal(_output(model, inputs), expected_base)  # zero up-projections: the identity
        _randomise_adapters(model)
        adapted = _output(model, inputs)
        assert (adapted - expected_base).abs().max() > 1e-3
        with model.disable_adapter():
            assert torch.equal(_output(model, inputs), expected_base)

    model.save_pretrained(tmp_path)
    torch.manual_seed(0)
    reloaded = PeftModel.from_pretrained(build().eval(), tmp_path)
    with torch.no_grad():
        assert torch.equal(_output(reloaded, inputs), adapted)


def test_explicit_targets_still_win():
    model = get_peft_model(_vit_mae(), BottleneckAdapterConfig(target_modules=["layers.0.mlp"],
                                                               parallel_modules=["layers.0.mlp"]))
    wrapped = [name for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]
    assert [name.removeprefix("base_model.model.") for name in wrapped] == ["layers.0.mlp"]


def test_unknown_model_type_is_named():
    gpt2 = GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50, n_positions=16))
    with pytest.raises(ValueError, match=r"no default placement for model_type 'gpt2'.*set target_modules"):
        get_peft_model(gpt2, BottleneckAdapterConfig())
