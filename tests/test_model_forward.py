"""AltaModel / AltaForPreTraining forward passes: input checks, view_mask and noise semantics, inference without
masking, loss weights, saving/loading with in-memory key names and the Auto classes, gradient checkpointing."""

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers import AutoModel, AutoModelForPreTraining

from alta_hf.modeling_alta import AltaForPreTraining
from alta_hf.modeling_alta.losses_alta import patchify
from tests.factories import perturb_parameters_, tiny_alta_config, tiny_pretraining_batch


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return perturb_parameters_(AltaForPreTraining(tiny_alta_config())).eval()


@pytest.fixture
def batch(model):
    return tiny_pretraining_batch(model.config, batch_size=2)


def _forward(model, batch, **changes):
    with torch.no_grad():
        return model(**{**batch, **changes})


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: {"pixel_values": b["pixel_values"][:, :3]}, r"pixel_values must have shape \[batch, 4 view slots"),
        (lambda b: {"pixel_values": torch.zeros(2, 4, 3, 256, 256)}, r"\[batch, 4 view slots, 3, 224, 224\], got \[2, 4, 3, 256, 256\]"),
        (lambda b: {"pixel_values": b["pixel_values"][:, 0]}, r"pixel_values must have shape \[batch, 4, C, H, W\]"),
        (lambda b: {"view_mask": torch.tensor([[0, 1, 1, 1], [1, 0, 0, 0]])}, r"slot 0 \(the current frontal view\) must be present; absent in rows \[0\]"),
        (lambda b: {"view_mask": torch.tensor([[1, 2, 1, 1], [1, 0, 0, 0]])}, "0/1"),
        (lambda b: {"view_mask": b["view_mask"].float()}, "0/1"),
        (lambda b: {"view_mask": b["view_mask"][:, :3]}, r"view_mask must have shape \[2, 4\]"),
        (lambda b: {"target_pixel_values": b["pixel_values"][:, 0]}, r"target_pixel_values must have shape \[2, 3, 448, 448\]"),
        (lambda b: {"input_ids": b["input_ids"][:1]}, r"input_ids must have shape \[2, length\], got \[1, 16\]"),
        (lambda b: {"mlm_labels": b["mlm_labels"][:, :8]}, r"mlm_labels must have shape \[2, 16\] \(as input_ids\)"),
        (lambda b: {"attention_mask": b["attention_mask"][1:]}, r"attention_mask must have shape \[2, 16\]"),
        (lambda b: {"noise": torch.rand(2, 4, 100)}, r"noise must have shape \[2, 4, 196\]"),
    ],
)
def test_wrong_inputs_raise_clear_errors(model, batch, change, message):
    with pytest.raises(ValueError, match=message):
        _forward(model, batch, **change(batch))


def test_wrong_inference_inputs_raise_clear_errors(model):
    with pytest.raises(ValueError, match=r"pixel_values must have shape \[batch, 3, 224, 224\], got \[1, 3, 256, 256\]"):
        model.alta.get_image_features(torch.zeros(1, 3, 256, 256))
    with pytest.raises(ValueError, match=r"pixel_values must have shape \[batch, 3, 224, 224\], got \[1, 4, 3, 224, 224\]"):
        model.alta.get_image_features(torch.zeros(1, 4, 3, 224, 224))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \[2, 5\]"):
        model.alta.get_text_features(torch.ones(2, 5, dtype=torch.long), torch.ones(2, 6, dtype=torch.long))


def test_view_mask_decides_absent_slots_not_pixel_values(model, batch):
    noise = torch.rand(2, 4, 196)
    reference = _forward(model, batch, noise=noise)
    # an absent slot's pixels are never looked at
    scrambled = batch["pixel_values"].clone()
    scrambled[1, 1:] = torch.randn_like(scrambled[1, 1:])
    assert torch.equal(_forward(model, batch, pixel_values=scrambled, noise=noise).loss, reference.loss)
    # an all-zero but present slot is encoded from its pixels (the official code would treat it as missing)
    zeroed = batch["pixel_values"].clone()
    zeroed[0, 3] = 0
    present = _forward(model, batch, pixel_values=zeroed, noise=noise).vision_last_hidden_state[0, 3]
    absent = _forward(model, batch, pixel_values=zeroed, view_mask=torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]),
                      noise=noise).vision_last_hidden_state[0, 3]
    assert (present - absent).abs().max() > 1e-3
    # bool masks work like 0/1 long masks
    as_bool = _forward(model, batch, view_mask=batch["view_mask"].bool(), noise=noise)
    assert torch.equal(as_bool.loss, reference.loss)


def test_noise_replays_the_masking(model, batch):
    noise = torch.rand(2, 4, 196)
    first, second = _forward(model, batch, noise=noise), _forward(model, batch, noise=noise)
    assert torch.equal(first.reconstruction_logits, second.reconstruction_logits)
    keep = 196 - int(196 * 0.75)
    kept = torch.argsort(noise[:, 0], dim=1)[:, :keep]
    expected_mask = torch.ones(2, 196).scatter(1, kept, 0.0)
    assert torch.equal(first.mask, expected_mask)
    assert torch.equal(first.ids_restore, torch.argsort(torch.argsort(noise[:, 0], dim=1), dim=1))
    assert first.vision_last_hidden_state.shape == (2, 4, 1 + keep, 64)
    assert first.image_local_embeds.shape == (2, 4 * keep, 128)
    # without noise every call draws new masks
    assert not torch.equal(_forward(model, batch).mask, _forward(model, batch).mask)


def test_inference_never_masks(model, batch):
    images = batch["pixel_values"][:, 0]
    with torch.no_grad():
        hidden = model.alta.vision_hidden_states(images)
        assert hidden.shape == (2, 1 + 196, 64)
        assert torch.equal(model.alta.get_image_features(images).pooler_output,
                           model.alta.get_image_features(images).pooler_output)
        assert model.alta.get_image_local_features(images).shape == (2, 196, 128)
        assert model.alta.get_text_local_features(batch["input_ids"], batch["attention_mask"]).shape == (2, 15, 128)


def test_inference_forward_is_clip_like(model, batch):
    images, ids, mask = batch["pixel_values"][:, 0], batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        output = model.alta(input_ids=ids, attention_mask=mask, pixel_values=images, return_loss=True)
        image = F.normalize(model.alta.get_image_features(images).pooler_output, dim=-1)
        text = F.normalize(model.alta.get_text_features(ids, mask).pooler_output, dim=-1)
    torch.testing.assert_close(output.image_embeds, image)
    torch.testing.assert_close(output.text_embeds, text)
    expected = model.alta.logit_scale.exp() * image @ text.t()
    torch.testing.assert_close(output.logits_per_image, expected)
    torch.testing.assert_close(output.logits_per_text, expected.t())
    targets = torch.arange(2)
    symmetric = (F.cross_entropy(expected, targets) + F.cross_entropy(expected.t(), targets)) / 2
    torch.testing.assert_close(output.loss, symmetric)


def test_loss_is_the_weighted_sum_and_zero_weights_skip_terms(batch):
    torch.manual_seed(0)
    full = perturb_parameters_(AltaForPreTraining(tiny_alta_config())).eval()
    noise = torch.rand(2, 4, 196)
    reference = _forward(full, batch, noise=noise)
    terms = ("global_loss", "local_loss", "reconstruction_loss", "mlm_loss")
    assert all(getattr(reference, name).ndim == 0 for name in terms)
    torch.testing.assert_close(reference.loss, sum(getattr(reference, name) for name in terms))

    config = tiny_alta_config(reconstruction_loss_weight=0.0, mlm_loss_weight=0.0, local_loss_weight=2.0)
    partial = AltaForPreTraining(config).eval()
    partial.load_state_dict(full.state_dict())
    output = _forward(partial, batch, noise=noise)
    assert output.reconstruction_loss is None and output.reconstruction_logits is None
    assert output.mlm_loss is None and output.mlm_logits is None
    torch.testing.assert_close(output.global_loss, reference.global_loss)
    torch.testing.assert_close(output.local_loss, reference.local_loss)
    torch.testing.assert_close(output.loss, reference.global_loss + 2 * reference.local_loss)


def test_batch_of_one(model):
    batch = tiny_pretraining_batch(model.config, batch_size=1)
    output = _forward(model, batch)
    assert torch.isfinite(output.loss) and output.image_embeds.shape == (1, 128)


def test_save_and_load_with_in_memory_names(tmp_path, model, batch):
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as file:
        keys = set(file.keys())
    assert keys == set(model.state_dict()) - set(model.all_tied_weights_keys)
    assert "alta.vision_model.layers.0.attention.o_proj.bottleneck_up.alta.weight" in keys
    assert not any(".attention.attention." in key or "encoder.layer" in key and "vision" in key for key in keys)

    loaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "AltaForPreTraining"
    state = model.state_dict()
    assert all(torch.equal(value, state[name]) for name, value in loaded.state_dict().items())
    assert loaded.trainable_parameter_counts() == model.trainable_parameter_counts()
    noise = torch.rand(2, 4, 196)
    assert torch.equal(_forward(loaded, batch, noise=noise).loss, _forward(model, batch, noise=noise).loss)

    # a pre-training folder loads as the inference model (base_model_prefix "alta")
    inference = AutoModel.from_pretrained(tmp_path)
    assert type(inference).__name__ == "AltaModel"
    images = batch["pixel_values"][:, 0]
    with torch.no_grad():
        assert torch.equal(inference.get_image_features(images).pooler_output,
                           model.alta.get_image_features(images).pooler_output)
    assert inference.trainable_parameter_counts() == model.alta.trainable_parameter_counts()


def test_gradient_checkpointing_gives_the_same_gradients(batch):
    config = tiny_alta_config(text_config={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    torch.manual_seed(0)
    model = perturb_parameters_(AltaForPreTraining(config)).train()
    noise = torch.rand(2, 4, 196)

    def gradients():
        model.zero_grad(set_to_none=True)
        model(**batch, noise=noise).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.activation_checkpointing_enable()
    checkpointed = gradients()
    assert set(checkpointed) == set(plain) == {n for n, p in model.named_parameters() if p.requires_grad}
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7)


def test_unpatchify_inverts_the_reconstruction_patch_order(model):
    target = torch.randn(2, 3, 448, 448)
    patches = patchify(target, model.config.reconstruction_patch_size)
    assert patches.shape == (2, 196, 3072)
    # (row, column, channel) inside a patch: the first values of patch 0 are pixel (0, 0)'s three channels
    assert torch.equal(patches[0, 0, :3], target[0, :, 0, 0])
    assert torch.equal(model.unpatchify(patches), target)
