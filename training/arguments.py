"""Command-line and config-file arguments of `train.py`, as dataclasses parsed by `HfArgumentParser`.

`--config FILE.yaml|json` gives defaults for any field; flags on the command line override them:

    accelerate launch train.py --config configs/demo.yaml --num_train_epochs 2
"""

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from transformers import HfArgumentParser

__all__ = ["DataArguments", "ModelArguments", "TrainingArguments", "arguments_to_dict", "parse_arguments"]


@dataclass
class ModelArguments:
    model_config: str | None = field(
        default=None, metadata={"help": "An AltaConfig JSON file: start from a freshly initialised AltaForPreTraining."}
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved AltaForPreTraining folder (e.g. a converted checkpoint) to start from."}
    )
    init_from_mrm: str | None = field(
        default=None, metadata={"help": "MRM.pth: start from the converted MRM vision tower (needs --init_from_cxr_bert)."}
    )
    init_from_cxr_bert: str | None = field(
        default=None, metadata={"help": "A CXR-BERT(-like) folder: the text tower, MLM head and text projection."}
    )
    tokenizer_dir: str | None = field(
        default=None,
        metadata={"help": "Tokenizer folder for a fresh model (default: the training set's `tokenizer_dir`)."},
    )
    processor_config: str | None = field(
        default=None,
        metadata={"help": "JSON of AltaImageProcessor settings (sizes, augmentation) for the processor of a fresh "
                          "or tower-converted model."},
    )
    trainable_policy: Literal["alta", "all", "heads"] = field(
        default="alta",
        metadata={"help": "'alta': ALTA's trainable set (adapters, norms, heads, ...); 'all': train every weight "
                          "(full fine-tuning, or towers trained from scratch); 'heads': the projection heads and "
                          "logit scales only (frozen towers, no adapters)."},
    )
    adapter_type: Literal["bottleneck", "lora"] | None = field(
        default=None,
        metadata={"help": "Adapters of a fresh or tower-converted model: 'bottleneck' (ALTA's) or 'lora' (peft's "
                          "LoRA at the rank matching the bottleneck adapters' trainable-parameter count, for "
                          "ablations). Default: the model config's."},
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute tower and decoder activations in the backward pass."}
    )
    vision_attention_init: Literal["default", "mimetic"] = field(
        default="default",
        metadata={"help": "Fresh models only: 'mimetic' starts the image tower's attention layers with query-key ~ "
                          "identity and value-output ~ -identity (Trockman & Kolter, 2023), so that a ViT trained "
                          "from scratch on little data (the demo) learns image content far sooner."},
    )


@dataclass
class DataArguments:
    train_dataset: str = field(default=None, metadata={"help": "A pre-training dataset folder (dataset_scripts)."})
    train_split: str = field(default="train", metadata={"help": "Split of --train_dataset to train on."})
    image_root: str | None = field(default=None, metadata={"help": "Override the dataset's image_root."})
    validation_task: str | None = field(
        default=None, metadata={"help": "Evaluation task run every epoch: 'demo' or 'rsna' (None: no validation)."}
    )
    validation_data: str | None = field(default=None, metadata={"help": "The evaluation set folder of that task."})
    validation_split: str = field(default="validation", metadata={"help": "Split of the evaluation set."})
    validation_metric: str = field(
        default="auto",
        metadata={"help": "Metric that selects the best model; 'auto': rsna -> roc_auc, demo -> zero_shot/accuracy."},
    )
    dataloader_num_workers: int = field(default=2, metadata={"help": "DataLoader worker processes."})
    max_skipped_fraction: float = field(
        default=0.05,
        metadata={"help": "Fail when more than this fraction of the studies seen so far had to be skipped."},
    )


@dataclass
class TrainingArguments:
    output_dir: str = field(default=None, metadata={"help": "Checkpoints, logs and the final model go here."})
    seed: int = field(default=0, metadata={"help": "Seed of the initialisation, data order and augmentation."})
    per_device_train_batch_size: int = field(default=24, metadata={"help": "Studies per device per micro-batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    base_learning_rate: float = field(
        default=1.5e-4, metadata={"help": "Learning rate = base_learning_rate * effective batch / 256."}
    )
    learning_rate: float | None = field(default=None, metadata={"help": "Absolute learning rate (overrides base)."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay on tensors with >= 2 dimensions."})
    adam_beta1: float = field(default=0.9)
    adam_beta2: float = field(default=0.95)
    warmup_epochs: float = field(default=10, metadata={"help": "Linear warm-up length, in epochs."})
    schedule_epochs: float = field(
        default=100, metadata={"help": "Length the cosine schedule is planned over, in epochs."}
    )
    num_train_epochs: int = field(default=30, metadata={"help": "Epochs actually trained (<= schedule_epochs)."})
    max_train_steps: int | None = field(default=None, metadata={"help": "Stop after this many optimizer steps."})
    mixed_precision: Literal["no", "fp16", "bf16"] | None = field(
        default=None,
        metadata={"help": "Autocast precision; default: the accelerate launcher's (its config file or flag), else "
                          "'no'. fp16 needs a GPU (on the CPU it falls back to fp32)."},
    )
    max_grad_norm: float | None = field(default=None, metadata={"help": "Clip gradients to this norm (None: off)."})
    max_consecutive_nonfinite: int = field(
        default=5, metadata={"help": "Stop after this many optimizer steps in a row with a NaN/inf loss."}
    )
    checkpointing_steps: int = field(default=500, metadata={"help": "Save a checkpoint every N optimizer steps."})
    checkpoints_total_limit: int = field(default=3, metadata={"help": "Keep only the last K checkpoints."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' or a checkpoint folder: resume exactly where it stopped."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log the averaged losses every N optimizer steps."})
    report_to: str = field(default="tensorboard", metadata={"help": "Accelerate tracker(s), or 'none'."})
    use_cpu: bool = field(default=False, metadata={"help": "Train on the CPU even when an accelerator exists."})
    cached_contrastive_accumulation: bool = field(
        default=False,
        metadata={"help": "Gradient accumulation that enlarges the contrastive batch (GradCache): the "
                          "gradient_accumulation_steps micro-batches share one global/local contrastive loss."},
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the final model folder to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repository id for --push_to_hub."})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})
    hub_token: str | None = field(
        default=None, metadata={"help": "Hub token (default: HF_TOKEN or the stored login). Never logged."}
    )


ARGUMENT_CLASSES = (ModelArguments, DataArguments, TrainingArguments)


def _read_config_file(path: str) -> dict:
    text = Path(path).read_text(encoding="utf-8")
    values = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of argument names to values")
    return values or {}


def parse_arguments(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """Parse `--config FILE` (optional) and the command line, the command line winning."""
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument("--config")
    known, remaining = config_parser.parse_known_args(argv)
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    parser.add_argument("--config", help="YAML or JSON file with default values for any of the arguments below.")
    if known.config:
        values = _read_config_file(known.config)
        fields = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"{known.config}: unknown argument(s) {unknown}")
        parser.set_defaults(**values)
    model_args, data_args, training_args, _ = parser.parse_args_into_dataclasses(args=remaining + (
        ["--config", known.config] if known.config else []))
    _validate(model_args, data_args, training_args)
    return model_args, data_args, training_args


def _validate(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments) -> None:
    starts = [model_args.model_config, model_args.model_name_or_path, model_args.init_from_mrm]
    if sum(start is not None for start in starts) != 1:
        raise ValueError("give exactly one start point: --model_config, --model_name_or_path or --init_from_mrm "
                         f"(+ --init_from_cxr_bert); got {starts}")
    if (model_args.init_from_mrm is None) != (model_args.init_from_cxr_bert is None):
        raise ValueError("--init_from_mrm and --init_from_cxr_bert go together")
    if data_args.train_dataset is None or training_args.output_dir is None:
        raise ValueError("--train_dataset and --output_dir are required")
    if (data_args.validation_task is None) != (data_args.validation_data is None):
        raise ValueError("--validation_task and --validation_data go together")
    if training_args.num_train_epochs > training_args.schedule_epochs:
        raise ValueError(f"num_train_epochs ({training_args.num_train_epochs}) exceeds schedule_epochs "
                         f"({training_args.schedule_epochs})")
    if training_args.push_to_hub and not training_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id")
    if not 0.0 <= data_args.max_skipped_fraction <= 1.0:
        raise ValueError(f"max_skipped_fraction must lie in [0, 1], got {data_args.max_skipped_fraction}")


def arguments_to_dict(*arguments) -> dict:
    """All arguments as one flat dict, secrets removed (for logs, trackers and training_args.json)."""
    merged = {}
    for group in arguments:
        merged.update(asdict(group))
    merged.pop("hub_token", None)
    return merged
