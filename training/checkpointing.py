"""Atomic training checkpoints on top of `accelerator.save_state`.

A checkpoint is written to `checkpoints/.tmp-checkpoint_<step>` and renamed to `checkpoints/checkpoint_<step>` once
complete (`training_state.json` is written last), so a crash while writing leaves the previous checkpoint usable; a
leftover temporary folder is ignored and removed. Only the newest `total_limit` checkpoints are kept.
"""

import json
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path

from accelerate.utils import load as load_torch_file
from safetensors import SafetensorError, safe_open

__all__ = ["STATE_FILE", "checkpoint_problem", "list_checkpoints", "load_checkpoint", "random_state_problem",
           "remove_incomplete_checkpoints", "resolve_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)

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


def resolve_checkpoint(output_dir, value: str | None, num_processes: int = 1) -> Path | None:
    """
    `'latest'` -> the newest intact checkpoint (None if there is none): a damaged newer one (`checkpoint_problem`,
    `random_state_problem`) is passed over with a warning, and if every checkpoint is damaged the run stops rather than
    start again from step 0 over them. A path -> that checkpoint; damage is an error, except unreadable random states,
    which leave the weights usable: then a loud warning says that the resume is not exact.
    """
    if value is None:
        return None
    if value == "latest":
        found = list_checkpoints(output_dir)
        problems = []
        for candidate in reversed(found):
            problem = checkpoint_problem(candidate) or random_state_problem(candidate, num_processes)
            if problem is None:
                if problems:
                    logger.warning("resuming from %s, the newest intact checkpoint", candidate)
                return candidate
            logger.warning("%s is damaged (%s); trying the previous checkpoint", candidate, problem)
            problems.append(f"{candidate.name}: {problem}")
        if problems:
            raise RuntimeError(f"{checkpoints_root(output_dir)}: no intact checkpoint to resume from ({'; '.join(problems)})")
        return None
    path = Path(value)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path}: not a complete checkpoint (no {STATE_FILE})")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise RuntimeError(f"{path}: damaged checkpoint ({problem}); resume from an older one or from 'latest'")
    problem = random_state_problem(path, num_processes)
    if problem is not None:
        logger.warning("%s: %s. THE RESUME IS NOT EXACT: dropout and masking draws will differ from an uninterrupted "
                       "run (the weights, optimizer and data position are restored)", path, problem)
    return path


def checkpoint_problem(path: Path) -> str | None:
    """What makes a checkpoint unusable, checked without loading it: an unreadable training state, a weights file
    whose safetensors header does not cover the file, a torch file (optimizer, scheduler, ...) whose zip directory
    is lost to truncation. None when it looks intact."""
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        if not isinstance(state, dict) or "global_step" not in state:
            return f"{STATE_FILE} holds no training state"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"{STATE_FILE} is unreadable ({error})"
    for file in sorted(path.rglob("*")):
        if not file.is_file() or file.name == STATE_FILE or file.name.startswith("random_states_"):
            continue
        if file.stat().st_size == 0:
            return f"{file.name} is empty"
        try:
            if file.suffix == ".safetensors":
                with safe_open(file, "pt"):
                    pass
            elif file.suffix in (".bin", ".pt", ".pth", ".pkl") and not zipfile.is_zipfile(file):
                return f"{file.name} is truncated or not a torch file"
        except (SafetensorError, OSError) as error:
            return f"{file.name} is unreadable ({error})"
    return None


def random_state_problem(path: Path, num_processes: int) -> str | None:
    """Why the random states of some process cannot be restored (accelerate only logs this at INFO level)."""
    for index in range(num_processes):
        file = Path(path) / f"random_states_{index}.pkl"
        if not file.is_file():
            return f"{file.name} is missing"
        try:
            states = load_torch_file(file)
            if not isinstance(states, dict) or "torch_manual_seed" not in states:
                return f"{file.name} holds no random states"
        except Exception as error:  # noqa: BLE001 - any unreadable pickle means the same thing here
            first_line = (str(error).strip().splitlines() or [""])[0]
            return f"{file.name} is unreadable ({type(error).__name__}: {first_line})"
    return None


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
    try:
        accelerator.load_state(str(path))
    except Exception as error:  # noqa: BLE001 - re-raised naming the checkpoint: torch and safetensors name no file
        raise RuntimeError(f"{path}: cannot restore the checkpoint ({type(error).__name__}: {error})") from error
    return json.loads((Path(path) / STATE_FILE).read_text(encoding="utf-8"))
