"""Why the demo does not learn: the global contrastive loss alone, on the demo model, through different image paths.

    python -m benchmarks.probe_demo_learning --data /tmp/demo_data --path frontal --steps 500
    python -m benchmarks.probe_demo_learning --data /tmp/demo_data --path frontal --vision-attention-init mimetic
    python -m benchmarks.probe_demo_learning --data /tmp/demo_data --path slots-frontal --mask-ratio 0.75 \
        --vision-attention-init mimetic

Every run trains the demo model (`configs/demo_from_scratch.yaml`, every weight trainable) with the global InfoNCE loss only, batch
32, AdamW (0.9, 0.95), a 40-step warm-up then a constant learning rate, and reports the loss and the zero-shot accuracy
on the demo validation split every `--eval-every` steps. The image path decides what the loss sees:

- `frontal`: the inference path (one unmasked current frontal, its [CLS]), i.e. CLIP on frontal images;
- `slots-frontal`: ALTA's training path (`AltaForPreTraining.encode_views`: MAE masking of every slot, mean of the
  four slots' [CLS]) with only the current frontal marked present;
- `slots`: the same with the study's real view mask.

Results and the commands behind them: benchmarks/RESULTS.md, "Why the demo does not learn".
"""

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

REPO_ROOT = Path(__file__).resolve().parents[1]

from alta_hf.evaluation import run_task
from alta_hf.modeling_alta.losses_alta import clamp_logit_scales_, global_contrastive_loss
from alta_hf.training.arguments import parse_arguments
from alta_hf.training.data import StudyDataset, TrainingCollator, load_pretraining_split
from alta_hf.training.model_setup import build_model_and_processor


def image_embeddings(model, batch: dict, path: str) -> torch.Tensor:
    if path == "frontal":
        return model.alta.get_image_features(batch["pixel_values"][:, 0]).pooler_output
    view_mask = batch["view_mask"].clone()
    if path == "slots-frontal":
        view_mask[:, 1:] = 0
    hidden_states, _, _ = model.encode_views(batch["pixel_values"], view_mask)
    return model.alta.visual_projection(hidden_states[:, :, 0].mean(1))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="demo data folder (python -m alta_hf.dataset_scripts.demo)")
    parser.add_argument("--path", choices=("frontal", "slots-frontal", "slots"), default="frontal")
    parser.add_argument("--mask-ratio", type=float, default=None, help="override the config's MAE mask ratio")
    parser.add_argument("--vision-attention-init", choices=("default", "mimetic"), default="default")
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model_args, data_args, _ = parse_arguments([
        "--config", str(REPO_ROOT / "configs" / "demo_from_scratch.yaml"), "--train_dataset", f"{args.data}/pretrain",
        "--validation_data", f"{args.data}/eval", "--output_dir", "unused",
        "--vision_attention_init", args.vision_attention_init,
    ])
    rows, image_root, meta = load_pretraining_split(data_args.train_dataset, data_args.train_split)
    torch.manual_seed(0)
    model, processor = build_model_and_processor(model_args, meta)
    if args.mask_ratio is not None:
        model.alta.vision_model.embeddings.config.mask_ratio = args.mask_ratio
    model.train()
    loader = DataLoader(StudyDataset(rows, processor, image_root, seed=0), batch_size=32, shuffle=True,
                        collate_fn=TrainingCollator(), num_workers=1, drop_last=True, persistent_workers=True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, betas=(0.9, 0.95), weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 40))

    print(f"| step | global loss (chance {torch.log(torch.tensor(32.0)):.3f}) | zero-shot accuracy | seconds |")
    print("|---:|---:|---:|---:|")
    step, start = 0, time.perf_counter()
    while step < args.steps:
        for batch in loader:
            images = F.normalize(image_embeddings(model, batch, args.path), dim=-1)
            texts = model.alta.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output
            texts = F.normalize(texts, dim=-1)
            loss = global_contrastive_loss(images, texts, model.alta.logit_scale.exp())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            clamp_logit_scales_(model.alta)
            step += 1
            if step % args.eval_every == 0 or step == args.steps:
                model.eval()
                metrics = run_task("demo", model.alta, processor, f"{args.data}/eval", split="validation",
                                   progress=False)["metrics"]
                model.train()
                print(f"| {step} | {loss.item():.3f} | {metrics['zero_shot/accuracy']:.3f} | "
                      f"{time.perf_counter() - start:.0f} |", flush=True)
            if step >= args.steps:
                break


if __name__ == "__main__":
    main()
