"""Gradient checkpointing through the transformers convention (`gradient_checkpointing_enable()`, its transformers 5
name `activation_checkpointing_enable()`): it reaches the image tower, the text tower and the reconstruction decoder
(with the PEFT adapters inside their layers), recomputes their layers in the backward pass, leaves the gradients
unchanged, and is off by default."""

import warnings

import pytest
import torch

from alta_hf.modeling_alta import AltaForPreTraining
from tests.factories import perturb_parameters_, tiny_alta_config, tiny_pretraining_batch

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def _stacks(model) -> dict:
    """The three layer stacks and, per stack, a module inside each layer that runs again when the layer is
    recomputed (the checkpoint wraps the layer's `forward`, so the layer's own hooks fire only once)."""
    return {
        "vision": [layer.layernorm_before for layer in model.alta.vision_model.layers],
        "text": [layer.attention for layer in model.alta.text_model.encoder.layer],
        "decoder": [layer.layernorm_before for layer in model.decoder.decoder_layers],
    }


def _flags(model) -> dict:
    return {
        "vision": [layer.gradient_checkpointing for layer in model.alta.vision_model.layers],
        "text": [layer.gradient_checkpointing for layer in model.alta.text_model.encoder.layer],
        "decoder": [layer.gradient_checkpointing for layer in model.decoder.decoder_layers],
    }


def _step(model, batch):
    """Gradients of one training step and the number of calls of each stack's inner modules."""
    calls = {name: 0 for name in _stacks(model)}
    handles = []
    for name, modules in _stacks(model).items():
        for module in modules:
            def hook(*_, name=name):
                calls[name] += 1
            handles.append(module.register_forward_hook(hook))
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    for handle in handles:
        handle.remove()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}, calls


def _enable(model, name: str) -> None:
    with warnings.catch_warnings():
        # transformers 5 marks the gradient_* names as deprecated aliases (removed in v6)
        warnings.simplefilter("ignore", FutureWarning)
        getattr(model, name)()


@pytest.mark.parametrize("adapter_type", ["bottleneck", "lora"])
def test_checkpointing_recomputes_all_three_stacks_with_the_same_gradients(adapter_type):
    torch.manual_seed(0)
    model = perturb_parameters_(AltaForPreTraining(tiny_alta_config(adapter_type=adapter_type, text_config=NO_DROPOUT)))
    model.train()
    batch = tiny_pretraining_batch(model.config, batch_size=2)
    batch["noise"] = torch.rand(2, model.config.num_view_slots, model.config.num_patches)

    assert not any(flag for flags in _flags(model).values() for flag in flags)  # off by default
    plain, plain_calls = _step(model, batch)
    _enable(model, "gradient_checkpointing_enable")
    assert all(flag for flags in _flags(model).values() for flag in flags)
    checkpointed, checkpointed_calls = _step(model, batch)
    # every layer of every stack ran a second time in the backward pass
    assert checkpointed_calls == {name: 2 * count for name, count in plain_calls.items()}

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(checkpointed) == set(plain) == trainable
    assert any("bottleneck_" in name or "lora_" in name for name in trainable)  # the adapters take part
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7, msg=name)

    _enable(model, "gradient_checkpointing_disable")
    assert not any(flag for flags in _flags(model).values() for flag in flags)
    assert _step(model, batch)[1] == plain_calls


def test_activation_checkpointing_names_and_eval_mode():
    model = AltaForPreTraining(tiny_alta_config())
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing and all(all(flags) for flags in _flags(model).values())
    batch = tiny_pretraining_batch(model.config, batch_size=1)
    # no backward to replay in evaluation: the layers run once
    model.eval()
    with torch.no_grad():
        calls = {name: 0 for name in _stacks(model)}
        for name, modules in _stacks(model).items():
            for module in modules:
                module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
        model(**batch)
    assert calls == {name: len(modules) for name, modules in _stacks(model).items()}
    model.activation_checkpointing_disable()
    assert not model.is_activation_checkpointing
