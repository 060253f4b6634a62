"""The bottleneck adapters as a PEFT method: placement, formulas, identity at init, enable/disable, adapter-only
state dicts, zero initialisation through `from_pretrained`, registration, and the LoRA alternative."""

import importlib.util
import inspect
import json

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model
from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.peft_types import PeftType
from safetensors.torch import load_file, save_file
from transformers import BertModel, ViTMAEModel

from alta_hf.modeling_alta import AltaForPreTraining, AltaModel, BottleneckAdapterConfig
from alta_hf.modeling_alta.adapters_alta import ALTA_BOTTLENECK_PEFT_TYPE, BottleneckAdapterModel
from tests.factories import tiny_alta_config


@pytest.fixture(scope="module")
def inputs():
    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(2, 3, 224, 224, generator=generator)
    input_ids = torch.randint(5, 200, (2, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 8:] = 0
    return pixel_values, input_ids, attention_mask


def _randomise_adapters(model, seed=2):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, BaseTunerLayer):
                for layer_name in module.adapter_layer_names:
                    for parameter in getattr(module, layer_name).parameters():
                        parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


def _bare_towers(model: AltaModel, adapter_prefix: str = "bottleneck_"):
    """Plain ViTMAEModel / BertModel holding the base weights of `model`'s towers (adapters dropped)."""
    config = model.config
    bare_vision = ViTMAEModel(config.vision_config.__class__(**{**config.vision_config.to_dict(), "mask_ratio": 0.0}))
    bare_text = BertModel(config.text_config, add_pooling_layer=False)
    for bare, tower in ((bare_vision, model.vision_model), (bare_text, model.text_model)):
        base = {k.replace(".base_layer", ""): v for k, v in tower.state_dict().items() if adapter_prefix not in k}
        bare.load_state_dict(base, strict=True)
        bare.eval()
    return bare_vision, bare_text


def _outputs(model: AltaModel, inputs):
    pixel_values, input_ids, attention_mask = inputs
    with torch.no_grad():
        return model.vision_hidden_states(pixel_values), model.text_hidden_states(input_ids, attention_mask)


def _bare_outputs(bare_vision, bare_text, inputs):
    pixel_values, input_ids, attention_mask = inputs
    in_order = torch.arange(bare_vision.embeddings.patch_embeddings.num_patches).expand(pixel_values.shape[0], -1)
    with torch.no_grad():
        vision = bare_vision(pixel_values, noise=in_order).last_hidden_state
        text = bare_text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return vision, text


def test_adapters_wrap_exactly_the_spec_targets():
    model = AltaModel(tiny_alta_config())
    wrapped = {name for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)}
    expected = {
        f"vision_model.layers.{i}.{target}" for i in range(2) for target in ("attention.o_proj", "mlp")
    } | {f"text_model.encoder.layer.{i}.{target}" for i in range(2) for target in ("attention.output", "output")}
    assert wrapped == expected
    parallel = {name for name in wrapped if model.get_submodule(name).bottleneck_parallel["alta"]}
    assert parallel == {name for name in expected if name.endswith(".mlp") or name.endswith("layer.0.output")
                        or name.endswith("layer.1.output")}
    for name in wrapped:
        module = model.get_submodule(name)
        assert module.bottleneck_scale["alta"] == (0.5 if name in parallel else 1.0)
        assert module.bottleneck_down["alta"].out_features == 64 // 4


def test_adapter_up_projections_start_at_zero_in_both_towers():
    model = AltaModel(tiny_alta_config())
    ups = [m.bottleneck_up["alta"] for m in model.modules() if isinstance(m, BaseTunerLayer)]
    assert len(ups) == 8
    assert all(torch.count_nonzero(p) == 0 for up in ups for p in up.parameters())
    downs = [m.bottleneck_down["alta"].weight for m in model.modules() if isinstance(m, BaseTunerLayer)]
    assert all(w.abs().sum() > 0 for w in downs)


def test_untrained_adapters_leave_the_towers_unchanged(inputs):
    model = AltaModel(tiny_alta_config()).eval()
    vision, text = _outputs(model, inputs)
    bare_vision, bare_text = _bare_outputs(*_bare_towers(model), inputs)
    assert torch.equal(vision, bare_vision)
    assert torch.equal(text, bare_text)


def test_adapter_formulas_on_each_target():
    model = AltaModel(tiny_alta_config()).eval()
    _randomise_adapters(model)
    generator = torch.Generator().manual_seed(3)

    def adapter(module, x):
        return module.bottleneck_up["alta"](F.gelu(module.bottleneck_down["alta"](x)))

    with torch.no_grad():
        o_proj = model.vision_model.layers[0].attention.o_proj
        x = torch.randn(2, 5, 64, generator=generator)
        base = o_proj.base_layer(x)
        torch.testing.assert_close(o_proj(x), base + adapter(o_proj, base), rtol=0, atol=1e-6)

        mlp = model.vision_model.layers[1].mlp
        torch.testing.assert_close(mlp(x), mlp.base_layer(x) + 0.5 * adapter(mlp, x), rtol=0, atol=1e-6)

        self_output = model.text_model.encoder.layer[0].attention.output
        residual = torch.randn(2, 5, 64, generator=generator)
        base = self_output.base_layer(x, residual)
        torch.testing.assert_close(self_output(x, residual), base + adapter(self_output, base), rtol=0, atol=1e-6)

        output = model.text_model.encoder.layer[1].output
        intermediate = torch.randn(2, 5, 256, generator=generator)
        expected = output.base_layer(intermediate, residual) + 0.5 * adapter(output, residual)
        torch.testing.assert_close(output(intermediate, residual), expected, rtol=0, atol=1e-6)


def test_disable_and_enable_adapters(inputs):
    model = AltaModel(tiny_alta_config()).eval()
    _randomise_adapters(model)
    adapted_vision, adapted_text = _outputs(model, inputs)
    bare_vision, bare_text = _bare_outputs(*_bare_towers(model), inputs)
    assert (adapted_vision - bare_vision).abs().max() > 1e-3
    assert (adapted_text - bare_text).abs().max() > 1e-3

    model.disable_adapters()
    vision, text = _outputs(model, inputs)
    assert torch.equal(vision, bare_vision) and torch.equal(text, bare_text)

    model.enable_adapters()
    vision, text = _outputs(model, inputs)
    assert torch.equal(vision, adapted_vision) and torch.equal(text, adapted_text)


def test_adapter_only_state_dict_round_trip(tmp_path, inputs):
    model = AltaModel(tiny_alta_config()).eval()
    _randomise_adapters(model)
    state_dict = model.get_adapter_state_dict()
    # 2 towers x 2 layers x 2 adapters x (down, up) x (weight, bias); adapter name stripped by peft
    assert len(state_dict) == 32
    assert all("bottleneck_" in key and ".alta." not in key for key in state_dict)
    assert {key.split(".")[0] for key in state_dict} == {"vision_model", "text_model"}
    save_file(state_dict, tmp_path / "adapter_model.safetensors")

    torch.manual_seed(5)
    fresh = AltaModel(tiny_alta_config()).eval()
    fresh.load_state_dict({k: v for k, v in model.state_dict().items() if "bottleneck_" not in k}, strict=False)
    assert not torch.equal(_outputs(fresh, inputs)[0], _outputs(model, inputs)[0])
    fresh.set_adapter_state_dict(load_file(tmp_path / "adapter_model.safetensors"))
    for ours, theirs in zip(_outputs(fresh, inputs), _outputs(model, inputs)):
        assert torch.equal(ours, theirs)

    with pytest.raises(ValueError, match="missing"):
        fresh.set_adapter_state_dict({k: v for k, v in state_dict.items() if "text_model" not in k})
    with pytest.raises(ValueError, match="outside the towers"):
        fresh.set_adapter_state_dict({**state_dict, "decoder.x": torch.zeros(1)})


def test_zero_init_survives_loading_a_checkpoint_without_adapters(tmp_path):
    model = AltaModel(tiny_alta_config())
    _randomise_adapters(model)
    model.config.save_pretrained(tmp_path)
    base_only = {k: v for k, v in model.state_dict().items() if "bottleneck_" not in k}
    save_file(base_only, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = AltaModel.from_pretrained(tmp_path)
    for module in loaded.modules():
        if isinstance(module, BaseTunerLayer):
            assert all(torch.count_nonzero(p) == 0 for p in module.bottleneck_up["alta"].parameters())
            assert module.bottleneck_down["alta"].weight.abs().sum() > 0
    state = loaded.state_dict()
    assert all(torch.equal(state[k], v) for k, v in base_only.items())
    # the ALTA trainable set is applied again after loading
    assert loaded.trainable_parameter_counts() == model.trainable_parameter_counts()


def test_registration_is_idempotent_and_peft_tooling_works(tmp_path):
    assert PeftType("ALTA_BOTTLENECK") is ALTA_BOTTLENECK_PEFT_TYPE
    registered = PEFT_TYPE_TO_TUNER_MAPPING[ALTA_BOTTLENECK_PEFT_TYPE]
    # a second copy of the file (what a Hub remote-code load does) imports without error and changes nothing
    spec = importlib.util.spec_from_file_location("adapters_alta_copy", inspect.getfile(BottleneckAdapterModel))
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    assert PEFT_TYPE_TO_TUNER_MAPPING[ALTA_BOTTLENECK_PEFT_TYPE] is registered
    assert copy.ALTA_BOTTLENECK_PEFT_TYPE is ALTA_BOTTLENECK_PEFT_TYPE

    # peft's own PeftModel round trip on a plain ViTMAE tower
    vision_config = tiny_alta_config().vision_config
    torch.manual_seed(0)
    base = ViTMAEModel(vision_config).eval()
    adapter_config = BottleneckAdapterConfig(target_modules=r"layers\.\d+\.(attention\.o_proj|mlp)", parallel_modules=r"layers\.\d+\.mlp")
    peft_model = get_peft_model(base, adapter_config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert trainable == 2 * 2 * (64 * 16 + 16 + 16 * 64 + 64)
    _randomise_adapters(peft_model)
    peft_model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "ALTA_BOTTLENECK"
    pixel_values = torch.randn(1, 3, 224, 224)
    noise = torch.rand(1, 196)
    with torch.no_grad():
        expected = peft_model(pixel_values, noise=noise).last_hidden_state
        torch.manual_seed(0)
        reloaded = PeftModel.from_pretrained(ViTMAEModel(vision_config).eval(), tmp_path)
        assert torch.equal(reloaded(pixel_values, noise=noise).last_hidden_state, expected)


def test_lora_alternative(inputs):
    config = tiny_alta_config(adapter_type="lora", lora_rank=4)
    model = AltaModel(config).eval()
    wrapped = {name for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)}
    assert wrapped == {
        f"vision_model.layers.{i}.attention.{p}" for i in range(2) for p in ("q_proj", "v_proj")
    } | {f"text_model.encoder.layer.{i}.attention.self.{p}" for i in range(2) for p in ("query", "value")}
    lora_b = [m.lora_B["alta"].weight for m in model.modules() if isinstance(m, BaseTunerLayer)]
    assert all(torch.count_nonzero(w) == 0 for w in lora_b)
    vision, text = _outputs(model, inputs)
    bare_vision, bare_text = _bare_outputs(*_bare_towers(model, "lora_"), inputs)
    torch.testing.assert_close(vision, bare_vision, rtol=0, atol=1e-6)
    torch.testing.assert_close(text, bare_text, rtol=0, atol=1e-6)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert sum("lora_" in name for name in trainable) == 16
    assert not any("bottleneck_" in name for name, _ in model.named_parameters())
    assert all("lora_" in key for key in model.get_adapter_state_dict())



def test_adapter_state_dict_is_taken_from_a_given_state_dict(inputs):
    model = AltaForPreTraining(tiny_alta_config()).eval()
    own = model.get_adapter_state_dict()
    # a checkpoint of this model whose adapter weights differ from the model's
    checkpoint = {key: value + 1.0 if "bottleneck_" in key else value for key, value in model.state_dict().items()}
    taken = model.get_adapter_state_dict(state_dict=checkpoint)
    assert taken.keys() == own.keys()
    for key, value in taken.items():
        torch.testing.assert_close(value, own[key] + 1.0, rtol=0, atol=0, msg=key)
    bare = model.alta.get_adapter_state_dict(state_dict={key.removeprefix("alta."): value
                                                         for key, value in checkpoint.items()})
    assert all(torch.equal(bare[key], taken[key]) for key in taken)
