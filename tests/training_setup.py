"""A tiny training setup shared by the training tests: demo data, a model config and a processor config small
enough that a training step takes a fraction of a second on one CPU core; train.py runs in a subprocess and their
results."""

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from alta_hf.dataset_scripts.demo import DemoOptions, build_demo_data
from devtools.processes import run_command

__all__ = ["TINY_DEMO", "assert_bitwise_equal", "build_tiny_demo", "final_weights", "run_train_py",
           "tiny_train_arguments", "write_tiny_configs"]

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_DEMO = DemoOptions(num_train_studies=48, num_validate_studies=4, num_eval_per_class=4, image_size=64, seed=5)

# 32-px slots (2 x 2 patches of 16 px) and a 64-px reconstruction target (32-px patches): the demo geometry shrunk
_MODEL = {
    "model_type": "alta",
    "projection_dim": 16,
    "reconstruction_image_size": 64,
    "vision_config": {
        "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
        "image_size": 32, "patch_size": 16, "layer_norm_eps": 1e-6, "decoder_hidden_size": 32,
        "decoder_num_hidden_layers": 1, "decoder_num_attention_heads": 2, "decoder_intermediate_size": 64,
    },
    "text_config": {
        "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 64, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.1,
    },
}
_PROCESSOR = {
    "image_processor": {"size": {"shortest_edge": 36}, "crop_size": {"height": 32, "width": 32},
                        "reconstruction_size": 72, "reconstruction_crop_size": 64},
    "max_length": 48,
}


def write_tiny_configs(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    model, processor = folder / "model.json", folder / "processor.json"
    model.write_text(json.dumps(_MODEL))
    processor.write_text(json.dumps(_PROCESSOR))
    return model, processor


def build_tiny_demo(folder: Path) -> Path:
    build_demo_data(folder, TINY_DEMO, num_workers=1)
    return folder


def tiny_train_arguments(data_dir: Path, config_dir: Path, output_dir: Path, **overrides) -> list[str]:
    """train.py arguments for the tiny setup (no validation, no trackers, one loader worker less: 0)."""
    model, processor = write_tiny_configs(config_dir)
    values = {
        "model_config": model, "processor_config": processor, "trainable_policy": "all",
        "train_dataset": data_dir / "pretrain", "output_dir": output_dir, "seed": 0,
        "per_device_train_batch_size": 8, "learning_rate": 1e-3, "warmup_epochs": 1, "schedule_epochs": 4,
        "num_train_epochs": 4, "max_grad_norm": 1.0, "checkpointing_steps": 2, "checkpoints_total_limit": 2,
        "logging_steps": 2, "dataloader_num_workers": 0, "report_to": "none", "use_cpu": True,
        **overrides,
    }
    arguments = []
    for name, value in values.items():
        if value is None:
            continue
        arguments += [f"--{name}", str(value)]
    return arguments


def run_train_py(arguments: list[str], faults: dict | None = None, timeout: float = 600):
    """`python train.py ARGUMENTS` on one thread, or with `faults` (the environment variables of
    tests/train_with_faults.py) `python -m tests.train_with_faults ARGUMENTS`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(faults or {})}
    script = ["-m", "tests.train_with_faults"] if faults else [str(REPO_ROOT / "train.py")]
    return run_command([sys.executable, *script, *arguments], cwd=REPO_ROOT, env=env, timeout=timeout)


def final_weights(output_dir: Path) -> dict:
    return load_file(str(Path(output_dir) / "model" / "model.safetensors"))


def assert_bitwise_equal(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    different = [name for name in expected if not torch.equal(actual[name], expected[name])]
    assert not different, different[:5]
