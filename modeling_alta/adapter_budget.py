"""Matched trainable-parameter budgets between ALTA's bottleneck adapters and LoRA (for the LoRA ablation).

    >>> from modeling_alta import AltaConfig
    >>> from modeling_alta.adapter_budget import lora_config_matching_bottleneck
    >>> lora = lora_config_matching_bottleneck(AltaConfig())   # rank 193 on q/v of both towers
    >>> lora.adapter_type, lora.lora_rank
    ('lora', 193)

Counts come from building the towers on the meta device (no memory, about a second at the base geometry), so they
follow whatever `lora_*_target_modules` and geometry the configuration names.
"""

import copy

import torch

from .modeling_alta import AltaModel

__all__ = ["adapter_parameter_count", "lora_config_matching_bottleneck", "lora_rank_for_budget"]


def adapter_parameter_count(config) -> int:
    """Parameters of the adapters (bottleneck or LoRA, per `config.adapter_type`) in both towers of `config`."""
    with torch.device("meta"):
        model = AltaModel(config)
    return sum(
        parameter.numel()
        for name, parameter in model.named_parameters()
        if ".bottleneck_" in name or ".lora_" in name
    )


def _with_lora(config, rank: int):
    variant = copy.deepcopy(config)
    variant.adapter_type, variant.lora_rank = "lora", rank
    return variant


def lora_rank_for_budget(config, budget: int | None = None) -> int:
    """
    The LoRA rank whose adapters (on `config.lora_vision_target_modules` / `lora_text_target_modules`) have the
    trainable-parameter count closest to `budget` (default: the bottleneck adapters of `config`'s geometry); the
    smaller rank on a tie. Everything else in ALTA's trainable set is the same for both adapter types, so matching
    the adapters matches the whole model's trainable count.
    """
    if budget is None:
        bottleneck = copy.deepcopy(config)
        bottleneck.adapter_type = "bottleneck"
        budget = adapter_parameter_count(bottleneck)
    if budget < 1:
        raise ValueError(f"budget must be a positive parameter count, got {budget}")
    # LoRA adds r * (in + out) per wrapped Linear (no biases): the count is linear in the rank
    try:
        per_rank = adapter_parameter_count(_with_lora(config, 1))
    except ValueError as error:  # peft refuses targets that match nothing
        raise ValueError(
            f"LoRA targets {config.lora_vision_target_modules} / {config.lora_text_target_modules} match no module "
            f"of a tower ({error})"
        ) from error
    low = max(1, budget // per_rank)
    return min((low, low + 1), key=lambda rank: (abs(rank * per_rank - budget), rank))


def lora_config_matching_bottleneck(config, keep_alpha_ratio: bool = True):
    """A copy of `config` with `adapter_type="lora"` at the rank matching its bottleneck adapters' parameter count;
    `keep_alpha_ratio` scales `lora_alpha` with the rank so that LoRA's scaling `alpha / rank` is unchanged."""
    rank = lora_rank_for_budget(config)
    variant = _with_lora(config, rank)
    if keep_alpha_ratio:
        variant.lora_alpha = config.lora_alpha * rank / config.lora_rank
    return variant
