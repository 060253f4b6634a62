"""The LoRA rank matching the bottleneck adapters' trainable-parameter budget (LoRA ablation)."""

import pytest

from alta_hf.modeling_alta import AltaConfig, AltaForPreTraining
from alta_hf.modeling_alta.adapter_budget import adapter_parameter_count, lora_config_matching_bottleneck, lora_rank_for_budget
from tests.factories import tiny_alta_config


def _trainable(config) -> int:
    return AltaForPreTraining(config).trainable_parameter_counts()[0]


def test_matched_rank_gives_the_closest_trainable_count_of_the_real_models():
    config = tiny_alta_config()
    target = _trainable(config)
    matched = lora_config_matching_bottleneck(config)
    assert matched.adapter_type == "lora" and matched.lora_rank == lora_rank_for_budget(config)
    # the whole model's trainable count (not only the adapters): the closest of all ranks around the match
    counts = {rank: _trainable(tiny_alta_config(adapter_type="lora", lora_rank=rank))
              for rank in (matched.lora_rank - 1, matched.lora_rank, matched.lora_rank + 1)}
    assert counts[matched.lora_rank] == _trainable(matched)
    best = min(counts, key=lambda rank: abs(counts[rank] - target))
    assert best == matched.lora_rank == 17  # tiny: bottleneck 17,024 adapter weights, LoRA 1,024 per rank
    assert abs(counts[17] - target) == 384
    # LoRA's scaling alpha / rank is kept
    assert matched.lora_alpha / matched.lora_rank == config.lora_alpha / config.lora_rank


def test_counts_follow_targets_and_budgets():
    config = tiny_alta_config(lora_vision_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                              lora_text_target_modules=["query", "key", "value"])
    per_rank = adapter_parameter_count(tiny_alta_config(adapter_type="lora", lora_rank=1,
                                                        lora_vision_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                                        lora_text_target_modules=["query", "key", "value"]))
    assert per_rank == 2 * 4 * 128 + 2 * 3 * 128  # 2 layers x modules x (64 in + 64 out)
    # 17,024 / 1,792 = 9.5 exactly: a tie goes to the smaller rank
    assert lora_rank_for_budget(config) == 9
    assert lora_rank_for_budget(config, budget=10 * per_rank) == 10
    assert lora_rank_for_budget(config, budget=1) == 1
    with pytest.raises(ValueError, match="match no module"):
        lora_rank_for_budget(tiny_alta_config(lora_vision_target_modules=["nothing"], lora_text_target_modules=["none"]))


def test_base_geometry_rank():
    # ALTA base: 14,201,856 bottleneck weights; LoRA on q/v of 24 layers adds 73,728 per rank
    assert adapter_parameter_count(AltaConfig()) == 14_201_856
    assert lora_rank_for_budget(AltaConfig()) == 193
