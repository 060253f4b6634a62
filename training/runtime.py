"""Run-time choices of a training process: device, mixed precision, and decisions all processes must share."""

import warnings

import torch
from accelerate.utils import is_mps_available, is_npu_available, is_xpu_available

from alta_hf.modeling_alta.step_work_alta import bf16_autocast_supported

__all__ = ["all_finite", "choose_mixed_precision", "prefer_cpu"]


def prefer_cpu(use_cpu: bool) -> bool:
    """Train on the CPU when asked to or when no accelerator exists (this also makes a multi-process launch use gloo)."""
    return use_cpu or not (torch.cuda.is_available() or is_xpu_available() or is_mps_available() or is_npu_available())


def choose_mixed_precision(requested: str | None, cpu: bool) -> str | None:
    # fp16 autocast does nothing on the CPU (no scaler, float32 matmuls): say so instead of pretending
    if requested == "fp16" and cpu:
        warnings.warn("fp16 mixed precision needs a GPU; training in float32 on the CPU (bf16 works on CPUs)")
        return "no"
    if requested == "bf16" and cpu and not bf16_autocast_supported("cpu"):
        warnings.warn("bf16 mixed precision on a CPU without native bf16 matmuls (amx_bf16, avx512_bf16) is emulated "
                      "and slower than float32")
    return requested


def all_finite(accelerator, loss: torch.Tensor) -> bool:
    """True when the loss is finite on every process."""
    bad = torch.tensor([0.0 if torch.isfinite(loss.detach()).all() else 1.0], device=loss.device)
    return accelerator.reduce(bad, reduction="sum").item() == 0
