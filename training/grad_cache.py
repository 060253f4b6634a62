"""Cached-gradient contrastive accumulation (the GradCache idea of Gao et al., 2021) for `AltaForPreTraining`.

Plain gradient accumulation does not enlarge a contrastive batch: the reports of one micro-batch never serve as
negatives for the images of the next. `cached_contrastive_step` gives the gradient of ONE batch made of all K
micro-batches while holding the activations of only one micro-batch at a time:

1. every micro-batch is embedded without building a graph (its RNG state is saved first);
2. the global and local contrastive losses are computed over the concatenated embeddings (and over all processes:
   the loss functions gather across ranks), and their gradients with respect to those embeddings and to the logit
   scales are cached;
3. every micro-batch is run again with gradients, under the same RNG state (so masking noise and dropout repeat),
   and `sum(embedding * cached gradient)` plus its share of the reconstruction and MLM losses is backpropagated.

The reconstruction and MLM losses are means over masked patches / labelled tokens of the whole batch, so each
micro-batch's mean is weighted by its share of those counts: the sum is then exactly the large-batch value.
"""

import contextlib

import torch
import torch.distributed as dist

from alta_hf.modeling_alta.losses_alta import global_contrastive_loss, local_contrastive_loss

__all__ = ["cached_contrastive_step"]

# per contrastive loss: the AltaForPreTraining outputs it reads and the attribute of its logit-scale parameter
_CONTRASTIVE_INPUTS = {
    "global_loss": (("image_embeds", "text_embeds"), "logit_scale"),
    "local_loss": (("image_local_embeds", "text_local_embeds"), "local_logit_scales"),
}
_SAMPLE_LOSSES = ("reconstruction_loss", "mlm_loss")


def _contrastive_module(model: torch.nn.Module) -> torch.nn.Module:
    """The submodule holding the logit scales and the loss weights (`AltaModel`), found by duck typing so that
    wrapped (DDP, compiled) and remote-code models work alike."""
    for module in model.modules():
        if hasattr(module, "logit_scale") and hasattr(module, "local_logit_scales") and hasattr(module, "config"):
            return module
    raise ValueError(f"{type(model).__name__} holds no module with `logit_scale` and `local_logit_scales`: "
                     "cached contrastive accumulation needs an AltaForPreTraining")


class _RngStates:
    """The CPU and (when initialised) CUDA generator states, to replay a micro-batch's masking noise and dropout."""

    def __init__(self):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


def _pad_words(tensors: list[torch.Tensor], length: int) -> list[torch.Tensor]:
    """Pad dim 1 (words) of every tensor to `length` with zeros (micro-batches padded to different lengths)."""
    return [torch.nn.functional.pad(t, (0, 0) * (t.dim() - 2) + (0, length - t.shape[1])) for t in tensors]


def _cached_gradients(leaves: dict, scales: list, contrastive: torch.Tensor | None):
    """d(contrastive)/d(each leaf) and d(contrastive)/d(each logit scale)."""
    if contrastive is None:
        return {}, []
    gradients = torch.autograd.grad(contrastive, list(leaves.values()) + scales, materialize_grads=True)
    return dict(zip(leaves, gradients[: len(leaves)])), list(gradients[len(leaves) :])


def _check_micro_batches(micro_batches) -> list[dict]:
    micro_batches = list(micro_batches)
    if not micro_batches:
        raise ValueError("cached_contrastive_step needs at least one micro-batch")
    for index, batch in enumerate(micro_batches):
        missing = [key for key in ("input_ids", "attention_mask", "mlm_labels") if key not in batch]
        if missing:
            raise ValueError(f"micro-batch {index} lacks {missing}: pass the collated AltaForPreTraining inputs")
    return micro_batches


def cached_contrastive_step(model, micro_batches, loss_scale: float = 1.0, backward=None, no_sync=None) -> dict:
    """
    Accumulate into `.grad` the gradient of the ALTA loss of the batch formed by all `micro_batches` together.

    Args:
        model: `AltaForPreTraining`, possibly wrapped (`accelerator.prepare`, DDP); it is called as `model(**batch)`
            so that wrappers (autocast, DDP) apply. Put it in train mode yourself.
        micro_batches: sequence of K input dicts of `AltaForPreTraining.forward` (an optional `noise` included).
            Micro-batches may differ in size and in padded text length.
        loss_scale (`float`, *optional*, defaults to 1.0): multiplies the loss before backpropagation (e.g. 1/n
            when n such steps are accumulated on top).
        backward (*optional*): `backward(loss)` used for the K final backward passes, e.g. `accelerator.backward`
            (mixed-precision loss scaling). Defaults to `loss.backward()`. NOTE: `accelerator.backward` divides by
            the Accelerator's `gradient_accumulation_steps`: create the Accelerator with 1 in this mode.
        no_sync (*optional*): `no_sync()` -> context manager wrapping the re-forward and backward of every micro-batch
            but the last (e.g. `lambda: accelerator.no_sync(model)`), so DDP all-reduces the gradients once.

    Returns:
        dict of detached scalar tensors over the whole batch: `loss` (weighted sum), `global_loss`, `local_loss`,
        `reconstruction_loss`, `mlm_loss` (a loss whose weight is 0 is absent), unscaled by `loss_scale`.

    Raises:
        ValueError: when `micro_batches` is empty, a micro-batch lacks the text inputs, or the model is not ALTA.
    """
    micro_batches = _check_micro_batches(micro_batches)
    backward = backward or torch.Tensor.backward
    alta = _contrastive_module(model)
    weights = alta.config.loss_weights

    # 1. embed every micro-batch without keeping activations
    enabled = [name for name in _CONTRASTIVE_INPUTS if weights[name] != 0]
    fields = [field for name in enabled for field in _CONTRASTIVE_INPUTS[name][0]]
    rng_states, embeddings, counts = [], {field: [] for field in fields}, []
    with torch.no_grad():
        for batch in micro_batches:
            rng_states.append(_RngStates())
            outputs = model(**batch, compute_contrastive_losses=False)
            for field in fields:
                embeddings[field].append(getattr(outputs, field))
            # what the reconstruction and MLM means of the whole batch divide by
            counts.append({"reconstruction_loss": outputs.mask.sum(), "mlm_loss": (batch["mlm_labels"] != -100).sum()})
    after_embedding = _RngStates()
    # Shares of the counts over all processes: under torch.distributed each micro-batch's MLM mean already divides by
    # the mean count per process (losses_alta.masked_lm_loss), so weighting it by its global share gives every rank
    # its part of the global per-token mean, which DDP's gradient average then completes.
    totals = torch.stack([torch.stack([count[name].float() for name in _SAMPLE_LOSSES]) for count in counts])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    shares = [{name: totals[index, column] / totals[:, column].sum().clamp_min(1)
               for column, name in enumerate(_SAMPLE_LOSSES)} for index in range(len(counts))]

    # 2. contrastive losses over the whole batch; cache their gradients w.r.t. the embeddings and the logit scales
    words = max(batch["attention_mask"].shape[1] for batch in micro_batches) - 1
    text_mask = torch.cat(_pad_words([batch["attention_mask"][:, 1:] for batch in micro_batches], words))
    if "text_local_embeds" in embeddings:
        embeddings["text_local_embeds"] = _pad_words(embeddings["text_local_embeds"], words)
    leaves = {field: torch.cat(parts).detach().requires_grad_() for field, parts in embeddings.items()}
    scales = [getattr(alta, _CONTRASTIVE_INPUTS[name][1]) for name in enabled]
    scales = [parameter for parameter in scales if parameter.requires_grad]
    losses = {}
    with torch.enable_grad():
        if "global_loss" in enabled:
            losses["global_loss"] = global_contrastive_loss(
                leaves["image_embeds"], leaves["text_embeds"], alta.logit_scale.exp()
            )
        if "local_loss" in enabled:
            losses["local_loss"] = local_contrastive_loss(
                leaves["image_local_embeds"], leaves["text_local_embeds"], text_mask, alta.local_logit_scales.exp()
            )
        contrastive = loss_scale * sum(weights[name] * value for name, value in losses.items()) if losses else None
        embedding_grads, scale_grads = _cached_gradients(leaves, scales, contrastive)

    # 3. re-run each micro-batch with gradients under its saved RNG state and backpropagate the cached gradients
    sample_losses = dict.fromkeys(_SAMPLE_LOSSES, 0.0)
    start = 0
    for index, (batch, rng_state, share) in enumerate(zip(micro_batches, rng_states, shares)):
        rows = slice(start, start + batch["input_ids"].shape[0])
        start = rows.stop
        last = index == len(micro_batches) - 1
        with contextlib.nullcontext() if last or no_sync is None else no_sync():
            rng_state.restore()
            outputs = model(**batch, compute_contrastive_losses=False)
            surrogate = 0.0
            for field, gradient in embedding_grads.items():
                embedding = getattr(outputs, field)
                # dim 1 cut back to this micro-batch's padded text length (a no-op for the other fields)
                surrogate = surrogate + (embedding.float() * gradient[rows, : embedding.shape[1]]).sum()
            # every micro-batch carries 1/K of the logit-scale gradient, so that each backward reaches every
            # trainable parameter, as DDP (find_unused_parameters=False) expects
            for parameter, gradient in zip(scales, scale_grads):
                surrogate = surrogate + (parameter * gradient).sum() / len(micro_batches)
            for name in _SAMPLE_LOSSES:
                value = getattr(outputs, name)
                if value is not None:
                    surrogate = surrogate + loss_scale * weights[name] * share[name] * value
                    sample_losses[name] = sample_losses[name] + share[name] * value.detach()
            backward(surrogate)
    after_embedding.restore()

    losses.update({name: sample_losses[name] for name in _SAMPLE_LOSSES if weights[name] != 0})
    losses = {name: torch.as_tensor(value).detach() for name, value in losses.items()}
    losses["loss"] = sum(weights[name] * value for name, value in losses.items())
    return losses
