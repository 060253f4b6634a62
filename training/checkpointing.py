"""Atomic training checkpoints on top of `accelerator.save_state`.

A checkpoint is written to `checkpoints/.tmp-checkpoint_<step>` and renamed to `checkpoints/checkpoint_<step>` once
complete (`training_state.json` is written last), so a crash while writing leaves the previous checkpoint usable; a
leftover temporary folder is ignored and removed. Only the newest `total_limit` checkpoints are kept.
"""

import json
import os
import re
import shutil
from pathlib import Path

__all__ = ["STATE_FILE", "list_checkpoints", "load_checkpoint", "remove_incomplete_checkpoints", "resolve_checkpoint",
           "save_checkpoint"]

STATE_FILE = "training_state.json"
_NAME = re.compile(r"^checkpoint_(\d+)$")
_TEMPORARY_PREFIX = ".tmp-"


def checkpoints_root(output_dir) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in root.iterdir()
             if (match := _NAME.match(path.name)) and (path / STATE_FILE).is_file()]
    return [path for _, path in sorted(found)]


def resolve_checkpoint(output_dir, value: str | None) -> Path | None:
    """`'latest'` -> the newest complete checkpoint (None if there is none); a path -> that checkpoint."""
    if value is None:
        return None
    if value == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(value)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path}: not a complete checkpoint (no {STATE_FILE})")
    return path


def remove_incomplete_checkpoints(output_dir) -> list[Path]:
    root = checkpoints_root(output_dir)
    leftovers = [path for path in root.iterdir() if path.name.startswith(_TEMPORARY_PREFIX)] if root.is_dir() else []
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return leftovers


def _write_json_durably(path: Path, value: dict) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_checkpoint(accelerator, output_dir, state: dict, total_limit: int | None) -> Path:
    """Save model, optimizer, scheduler, scaler and RNG states (all processes) plus `state` (JSON), atomically."""
    root = checkpoints_root(output_dir)
    final = root / f"checkpoint_{state['global_step']}"
    temporary = root / f"{_TEMPORARY_PREFIX}{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json_durably(temporary / STATE_FILE, state)
        if final.exists():  # a re-run of the same step after a resume
            shutil.rmtree(final)
        os.replace(temporary, final)
        _fsync_directory(root)
        if total_limit:
            for old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path) -> dict:
    """Restore everything `save_checkpoint` saved; returns the training state."""
    accelerator.load_state(str(path))
    return json.loads((Path(path) / STATE_FILE).read_text(encoding="utf-8"))
