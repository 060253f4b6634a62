"""Naming the damaged file when safetensors weights cannot be read: the library's own error names none."""

from pathlib import Path

from safetensors import SafetensorError, safe_open

__all__ = ["SafetensorError", "corrupt_weights_message"]


def corrupt_weights_message(folder, error: Exception) -> str:
    """Which `*.safetensors` file of `folder` is unreadable (each is opened to find it), and what to do about it."""
    folder = Path(folder)
    damaged = []
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        try:
            with safe_open(path, "pt"):
                pass
        except (SafetensorError, OSError) as problem:
            damaged.append(f"{path} ({path.stat().st_size:,} bytes: {problem})")
    where = "; ".join(damaged) if damaged else f"a weights file of {folder} ({error})"
    return f"corrupt or truncated weights: {where}; copy or download the file again"
