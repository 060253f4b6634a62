"""What a training step can leave out without changing its losses or gradients, and where bf16 autocast pays.

`AltaForPreTraining.forward` computes, in training mode, only what the four losses read:

- text rows end at the last column that holds a real token or an MLM label in some row of the batch
  (`used_text_length`): trailing padding never reaches a real token (attention masks it out, positions are
  absolute), so the real tokens' outputs are unchanged; the text outputs are padded back to the input length with
  zeros, which keeps every process's shapes equal for the gathered contrastive losses;
- the masked-LM head (transform + vocabulary projection) runs on the labelled positions only (`labelled_rows`).

An absent view slot is *not* skipped: its tokens are the missing-view token plus the position embeddings of the
patches its own masking noise keeps, so its [CLS] output and local tokens differ from slot to slot and from step
to step (only at mask ratio 0 would they be a fixed permutation of one computation).

Under autocast a frozen `nn.Linear` still casts its weight to bf16/fp16 at every call, and autograd saves that copy
to compute the input's gradient: one low-precision copy of every frozen matrix per step, alive until backward.
`keep_frozen_weights_uncast` routes frozen linears through `FrozenLinearFunction`, which saves the parameter itself
and recasts it in backward (a cast is cheap next to the matmul it feeds); outputs and gradients are bitwise those of
`F.linear`.
"""

import functools

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FrozenLinearFunction",
    "bf16_autocast_supported",
    "keep_frozen_weights_uncast",
    "labelled_rows",
    "pad_to_length",
    "used_text_length",
]


def used_text_length(attention_mask: torch.Tensor, mlm_labels: torch.Tensor | None = None) -> int:
    """1 + the last column where some row has a real token (or an MLM label); at least 1."""
    used = attention_mask.bool()
    if mlm_labels is not None:
        used = used | (mlm_labels != -100)
    columns = used.any(dim=0).nonzero()
    return int(columns[-1]) + 1 if len(columns) else 1


def pad_to_length(tensor: torch.Tensor, length: int, dim: int = 1) -> torch.Tensor:
    """`tensor` zero-padded at the end of `dim` to `length` (returned unchanged when already that long)."""
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    return F.pad(tensor, (0, 0) * (tensor.dim() - 1 - dim) + (0, missing))


def labelled_rows(hidden_states: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden states `(M, hidden)`, labels `(M,)`) of the M positions whose label is not -100, row-major."""
    selected = labels != -100
    return hidden_states[selected], labels[selected]


# CPU flags of native bf16 matmul instructions (oneDNN emulates bf16 without them)
_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def _cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:  # not Linux
        return False
    return any(flag in flags for flag in _BF16_CPU_FLAGS)


def bf16_autocast_supported(device: torch.device | str) -> bool:
    """Whether bf16 autocast can speed up training on `device`: a CUDA GPU with bf16 support, or a CPU with native
    bf16 matmuls (`amx_bf16` or `avx512_bf16` in /proc/cpuinfo; without them autocast only adds casts)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_has_native_bf16()


class FrozenLinearFunction(torch.autograd.Function):
    """`F.linear(x, weight, bias)` under the ambient autocast for a weight that needs no gradient (the bias may: the
    MLM decoder's is trained), saving the weight parameter for backward instead of autocast's cast of it."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        output = F.linear(x, weight, bias)  # autocast applies here as in nn.Linear; grad mode is off inside forward
        ctx.save_for_backward(weight)
        ctx.input_dtype = x.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return output

    @staticmethod
    def backward(ctx, grad_output):
        (weight,) = ctx.saved_tensors
        grad_input = grad_bias = None
        # the products autocast's linear backward computes, in the forward's compute dtype (backward may run inside
        # the caller's autocast region: keep it out)
        with torch.autocast(grad_output.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                grad_input = grad_output.matmul(weight.to(grad_output.dtype)).to(ctx.input_dtype)
            if ctx.needs_input_grad[2]:
                grad_bias = grad_output.reshape(-1, grad_output.shape[-1]).sum(0).to(ctx.bias_dtype)
        return grad_input, None, grad_bias


def _frozen_aware_linear(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if (not linear.weight.requires_grad and x.requires_grad and torch.is_grad_enabled()
            and torch.is_autocast_enabled(x.device.type)):
        return FrozenLinearFunction.apply(x, linear.weight, linear.bias)
    return F.linear(x, linear.weight, linear.bias)


def keep_frozen_weights_uncast(module: nn.Module) -> nn.Module:
    """Make every plain `nn.Linear` in `module` save its parameter rather than autocast's copy when its weight is
    frozen.

    The choice is made at each call, from `requires_grad`, so trainable-set changes after this call are honoured;
    outside autocast, or for trainable weights, the layer runs `F.linear` as before.
    """
    for submodule in module.modules():
        if type(submodule) is nn.Linear:
            submodule.forward = functools.partial(_frozen_aware_linear, submodule)
    return module
