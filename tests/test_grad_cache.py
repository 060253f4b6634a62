"""Cached-gradient contrastive accumulation (training/grad_cache.py): K micro-batches give the loss and gradients of
one batch of their total size; masking noise and dropout are replayed from the saved RNG state."""

import pytest
import torch

from alta_hf.modeling_alta import AltaForPreTraining
from tests.factories import assert_close_to_scale, perturb_parameters_, tiny_alta_config, tiny_pretraining_batch
from alta_hf.training.grad_cache import cached_contrastive_step

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def _model(**overrides):
    torch.manual_seed(0)
    return perturb_parameters_(AltaForPreTraining(tiny_alta_config(text_config=NO_DROPOUT, **overrides))).train()


def _gradients(model) -> dict:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _split(batch: dict, sizes: list[int]) -> list[dict]:
    parts, start = [], 0
    for size in sizes:
        parts.append({key: value[start : start + size] for key, value in batch.items()})
        start += size
    return parts


def _plain(model, batch):
    model.zero_grad(set_to_none=True)
    outputs = model(**batch)
    outputs.loss.backward()
    return outputs, _gradients(model)


def _assert_same(cached_losses, cached_grads, outputs, grads, model):
    for name in ("loss", "global_loss", "local_loss", "reconstruction_loss", "mlm_loss"):
        torch.testing.assert_close(cached_losses[name], getattr(outputs, name).detach(), rtol=1e-5, atol=1e-6)
    assert set(cached_grads) == set(grads) == {n for n, p in model.named_parameters() if p.requires_grad}
    # per tensor, relative to its largest entry: micro-batches trim their reports to their own longest one, and the
    # local loss's temperatures amplify the float32 rounding of the different shapes (float64: equal to 1e-8)
    for name, grad in grads.items():
        assert_close_to_scale(cached_grads[name], grad, name)


@pytest.mark.parametrize("sizes", [[2, 2, 2], [1, 3, 2]])
def test_micro_batches_give_the_loss_and_gradients_of_one_large_batch(sizes):
    model = _model()
    batch = tiny_pretraining_batch(model.config, batch_size=6, seed=3)
    batch["view_mask"][3, 2:] = 0
    batch["noise"] = torch.rand(6, model.config.num_view_slots, model.config.num_patches)
    outputs, grads = _plain(model, batch)
    # the MLM mean is over labelled tokens, whose count differs between micro-batches
    labelled = [(part["mlm_labels"] != -100).sum().item() for part in _split(batch, sizes)]
    assert len(set(labelled)) > 1

    model.zero_grad(set_to_none=True)
    losses = cached_contrastive_step(model, _split(batch, sizes))
    _assert_same(losses, _gradients(model), outputs, grads, model)
    # the negatives of other micro-batches matter: per-micro-batch losses differ from the large-batch one
    alone = model(**_split(batch, sizes)[0]).global_loss
    assert (alone - outputs.global_loss).abs() > 1e-3


def test_loss_scale_backward_callable_and_accumulation_into_grad():
    model = _model()
    batch = tiny_pretraining_batch(model.config, batch_size=4, seed=5)
    batch["noise"] = torch.rand(4, model.config.num_view_slots, model.config.num_patches)
    outputs, grads = _plain(model, batch)
    calls = []

    def backward(loss):
        calls.append(loss.detach())
        loss.backward()

    model.zero_grad(set_to_none=True)
    # two half-weighted steps on top of each other accumulate to one full gradient
    for _ in range(2):
        losses = cached_contrastive_step(model, _split(batch, [2, 2]), loss_scale=0.5, backward=backward)
    assert len(calls) == 4
    _assert_same(losses, _gradients(model), outputs, grads, model)


def test_rng_state_is_replayed_for_masking_noise_and_dropout():
    # no explicit noise and dropout on: the re-run must see the masks and dropout of the embedding pass
    torch.manual_seed(0)
    model = perturb_parameters_(AltaForPreTraining(tiny_alta_config(text_config={"hidden_dropout_prob": 0.2}))).train()
    batch = tiny_pretraining_batch(model.config, batch_size=3, seed=7)
    torch.manual_seed(11)
    outputs, grads = _plain(model, batch)
    after_plain = torch.rand(3)

    model.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    losses = cached_contrastive_step(model, [batch])
    _assert_same(losses, _gradients(model), outputs, grads, model)
    # afterwards the generator is where one plain pass would have left it
    assert torch.equal(torch.rand(3), after_plain)


def test_micro_batches_padded_to_different_lengths_and_disabled_losses():
    model = _model(local_loss_weight=0.0, mlm_loss_weight=0.0)
    batch = tiny_pretraining_batch(model.config, batch_size=4, seed=9)
    batch["noise"] = torch.rand(4, model.config.num_view_slots, model.config.num_patches)
    outputs, grads = _plain(model, batch)
    parts = _split(batch, [2, 2])
    # the second micro-batch's reports end early: its padded tail can be cut off without changing anything
    keep = int(parts[1]["attention_mask"].sum(1).max())
    parts[1] = {key: value[:, :keep] if value.dim() == 2 and key != "view_mask" else value
                for key, value in parts[1].items()}
    assert keep < batch["input_ids"].shape[1]
    model.zero_grad(set_to_none=True)
    losses = cached_contrastive_step(model, parts)
    assert "local_loss" not in losses and "mlm_loss" not in losses
    torch.testing.assert_close(losses["loss"], outputs.loss.detach(), rtol=1e-5, atol=1e-6)
    cached = _gradients(model)
    assert set(cached) == set(grads)
    for name, grad in grads.items():
        torch.testing.assert_close(cached[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_bad_input_raises_clear_errors():
    model = _model()
    with pytest.raises(ValueError, match="at least one micro-batch"):
        cached_contrastive_step(model, [])
    with pytest.raises(ValueError, match=r"micro-batch 0 lacks \['mlm_labels'\]"):
        cached_contrastive_step(model, [{"input_ids": torch.ones(1, 4), "attention_mask": torch.ones(1, 4)}])
    with pytest.raises(ValueError, match="needs an AltaForPreTraining"):
        cached_contrastive_step(torch.nn.Linear(2, 2), [tiny_pretraining_batch(model.config, batch_size=1)])
