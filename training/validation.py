"""Validation during training (a zero-shot evaluation protocol) and the model folders it keeps."""

import json
import os
import shutil
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list

from alta_hf.evaluation import run_task
from alta_hf.processing import cap_text_length

__all__ = ["metric_name", "run_validation", "save_model_folder"]

_DEFAULT_METRICS = {"rsna": "roc_auc", "demo": "zero_shot/accuracy"}


def metric_name(task: str, metric: str) -> str:
    if metric != "auto":
        return metric
    if task not in _DEFAULT_METRICS:
        raise ValueError(f"no default validation metric for task {task!r}; give --validation_metric")
    return _DEFAULT_METRICS[task]


def run_validation(accelerator, model, processor, data_args) -> dict | None:
    """
    Run the validation protocol on the main process (the other processes wait) and return its metrics on every
    process. The training RNG state is left untouched, so validating never changes the training run.
    """
    if data_args.validation_task is None:
        return None
    result = [None]
    if accelerator.is_main_process:
        inference_model = accelerator.unwrap_model(model).alta
        with torch.random.fork_rng(devices=[]):
            result[0] = run_task(
                data_args.validation_task, inference_model, processor, data_args.validation_data,
                split=data_args.validation_split, progress=False,
            )["metrics"]
    accelerator.wait_for_everyone()
    return broadcast_object_list(result)[0]


def save_model_folder(model, processor, folder: Path, training_arguments: dict) -> Path:
    """`save_pretrained` of model + processor + `training_args.json` into `folder`, replacing it atomically."""
    folder = Path(folder)
    temporary = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(temporary, ignore_errors=True)
    text_config = getattr(getattr(model, "config", None), "text_config", None)
    cap_text_length(processor, getattr(text_config, "max_position_embeddings", None), str(folder))
    model.save_pretrained(temporary)
    processor.save_pretrained(temporary)
    (temporary / "training_args.json").write_text(json.dumps(training_arguments, indent=2, default=str))
    if folder.exists():
        retired = folder.with_name(f".old-{folder.name}")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(folder, retired)
        os.replace(temporary, folder)
        shutil.rmtree(retired)
    else:
        os.replace(temporary, folder)
    return folder
