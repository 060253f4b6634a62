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
"""

from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["bf16_autocast_supported", "labelled_rows", "pad_to_length", "used_text_length"]


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
