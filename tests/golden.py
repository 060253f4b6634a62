"""The comparison with the official code's recorded outputs (tests/fixtures/golden_tiny)."""

import torch

__all__ = ["assert_golden"]


def assert_golden(actual: torch.Tensor, golden: torch.Tensor, name: str = "") -> None:
    """Integers equal; floats within atol = 1e-4 * max(1, max |golden|) (the tensor's scale: gradients hold tiny
    entries whose float32 rounding is relative to their tensor, not to themselves)."""
    actual = actual.detach().to(golden.dtype)
    assert actual.shape == golden.shape, f"{name}: shape {list(actual.shape)} != golden {list(golden.shape)}"
    if not golden.is_floating_point():
        assert torch.equal(actual, golden), name
        return
    error, atol = (actual - golden).abs().max().item(), 1e-4 * max(1.0, golden.abs().max().item())
    assert error <= atol, f"{name}: max abs error {error:.3e} exceeds atol {atol:.3e}"
