"""Optimizer and learning-rate schedule of the official recipe.

AdamW with weight decay on the trainable tensors of two or more dimensions (none on biases, norms and scalars; the
official grouping, which also decays the [CLS], view/temporal and mask tokens); learning rate =
base_learning_rate * effective batch / 256; a per-iteration cosine schedule with linear warm-up, planned over
`schedule_epochs` (the official run plans 100 epochs with 10 of warm-up and stops after 30).
"""

import math

import torch
from transformers import get_cosine_schedule_with_warmup

__all__ = ["build_optimizer", "build_scheduler", "scaled_learning_rate"]


def scaled_learning_rate(training_args, num_processes: int) -> float:
    if training_args.learning_rate is not None:
        return training_args.learning_rate
    effective_batch = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * num_processes
    return training_args.base_learning_rate * effective_batch / 256


def build_optimizer(model: torch.nn.Module, learning_rate: float, training_args) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": training_args.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=(training_args.adam_beta1, training_args.adam_beta2))


def build_scheduler(optimizer, updates_per_epoch: int, training_args, num_processes: int):
    """
    Cosine with warm-up, stepped once per optimizer update. Accelerate's prepared scheduler steps `num_processes`
    times per update (it assumes single-process step counts), hence the scaling.
    """
    warmup = math.ceil(training_args.warmup_epochs * updates_per_epoch)
    total = math.ceil(training_args.schedule_epochs * updates_per_epoch)
    return get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=warmup * num_processes, num_training_steps=max(total, 1) * num_processes
    )
