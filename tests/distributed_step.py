"""One training step of the tiny setup, on however many processes it is launched with (a script, not a test).

    python -m tests.distributed_step DATA CONFIGS OUT GLOBAL_BATCH
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 ... -m tests.distributed_step ...

Every process takes its slice of the same global batch (the training data pipeline: StudyDataset + collator) and the
same masking noise, runs forward/backward through the prepared (DDP) model, and rank 0 writes the loss averaged over
processes and the synchronised gradients to OUT/step.safetensors.
"""

import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from tests.training_setup import tiny_train_arguments
from alta_hf.training.arguments import parse_arguments
from alta_hf.training.data import SAMPLE_COUNTERS, StudyDataset, TrainingCollator, load_pretraining_split
from alta_hf.training.model_setup import build_model_and_processor


def main(data_dir: Path, config_dir: Path, out: Path, global_batch: int) -> None:
    accelerator = Accelerator(cpu=True)
    model_args, data_args, _ = parse_arguments(tiny_train_arguments(data_dir, config_dir, out))
    rows, image_root, meta = load_pretraining_split(data_args.train_dataset, "train")
    torch.manual_seed(0)
    model, processor = build_model_and_processor(model_args, meta)
    dataset = StudyDataset(rows, processor, image_root, seed=0)

    per_process = global_batch // accelerator.num_processes
    first = accelerator.process_index * per_process
    batch = TrainingCollator()([dataset[index] for index in range(first, first + per_process)])
    for name in SAMPLE_COUNTERS:
        batch.pop(name)
    num_patches = model.config.vision_config.image_size // model.config.vision_config.patch_size
    noise = torch.rand(global_batch, model.config.num_view_slots, num_patches**2,
                       generator=torch.Generator().manual_seed(1))
    batch["noise"] = noise[first:first + per_process]

    model = accelerator.prepare(model)
    model.train()
    outputs = model(**batch)
    accelerator.backward(outputs.loss)
    losses = {name: accelerator.reduce(getattr(outputs, name).detach(), reduction="mean")
              for name in ("loss", "global_loss", "local_loss", "reconstruction_loss", "mlm_loss")}
    if accelerator.is_main_process:
        tensors = {f"loss/{name}": value.reshape(1) for name, value in losses.items()}
        for name, parameter in accelerator.unwrap_model(model).named_parameters():
            if parameter.grad is not None:
                tensors[f"grad/{name}"] = parameter.grad.contiguous()
        save_file(tensors, str(out / "step.safetensors"))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
