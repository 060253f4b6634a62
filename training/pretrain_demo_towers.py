"""Pre-train the demo's two towers, self-supervised, in the formats users bring: an `MRM.pth` and a CXR-BERT-like folder.

    python -m alta_hf.training.pretrain_demo_towers --data-dir demo_data --output-dir demo_towers   # what made demo_towers/

The real pipeline has two stages: MRM pre-trains the image tower (masked record modelling: MAE on the radiograph
plus masked-LM of the report, the report tokens predicted with the image feature added), CXR-BERT is the text tower,
and ALTA then adapts both, frozen. This script is the demo's first stage. It trains, on the demo training split only
(no labels, no evaluation images), the geometry of `configs/model/demo_towers.json` with two self-supervised losses:

- masked image modelling: 75 % of the current frontal's patches masked, the super-resolution target reconstructed
  (normalised pixels), as MAE/MRM;
- masked report modelling: 50 % of the report's tokens masked ([MASK]), predicted by the text tower with the
  pooled image feature added to its input embeddings (MRM's record modelling; the image map is MRM's `bert_mlp`).
  Half of the reports are masked whole (`--whole-report-fraction`): a templated report states its finding twice
  (findings and impression), so with random masking alone the MLM fills the gaps from the text and ignores the
  image; a whole-masked report can only be read off the image. The pooled feature is the current frontal's
  (`--condition-on frontal`), the view ALTA's evaluation embeds.

Adapters, projection heads, logit scales and view/time embeddings are not part of the towers: they stay at ALTA's
initialisation and are not written. The outputs:

    OUTPUT/MRM.pth                  {"model": timm/MAE names (fused qkv) + decoder + bert_mlp, "args": Namespace}
    OUTPUT/cxr-bert-demo/           config.json (BERT), vocab.txt, tokenizer_config.json, model.safetensors
                                    (BertForMaskedLM names: bert.*, cls.predictions.*)
    OUTPUT/metadata.json            command, seed, steps, wall time, CPU, final losses, file sizes and sha256

Each epoch ends with a checkpoint under OUTPUT/.pretrain_state/ (`--resume` continues from it exactly).
"""

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

__all__ = ["TEXT_FOLDER", "export_mrm", "export_text_folder", "file_record", "main", "tower_parameter_names"]

REPO_ROOT = Path(__file__).resolve().parents[1]
TOWERS_CONFIG = REPO_ROOT / "configs" / "model" / "demo_towers.json"
PROCESSOR_CONFIG = REPO_ROOT / "configs" / "processor" / "demo.json"
TEXT_FOLDER = "cxr-bert-demo"
_STATE_DIR = ".pretrain_state"
# Parts of AltaForPreTraining that are the towers (and their pre-training heads); the rest is ALTA's and stays fresh.
_TOWER_PREFIXES = ("alta.vision_model.", "alta.text_model.", "decoder.", "mlm_head.", "image_to_text.")
_NOT_TOWER = ("bottleneck_", "lora_")
_FIXED = {"alta.vision_model.embeddings.position_embeddings", "decoder.decoder_pos_embed"}


def tower_parameter_names(model) -> list[str]:
    """The tower parameters pre-training trains: everything under `_TOWER_PREFIXES` but adapters and the fixed
    sin-cos position tables."""
    return [
        name for name, _ in model.named_parameters()
        if name.startswith(_TOWER_PREFIXES) and not any(part in name for part in _NOT_TOWER) and name not in _FIXED
    ]


def _mrm_keys(model) -> list[str]:
    """The timm/MAE key names of an MRM checkpoint of this geometry (the ones convert_pretrained_towers reads)."""
    vision = model.config.vision_config
    block = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
             "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")
    keys = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias",
            "decoder_embed.weight", "decoder_embed.bias", "mask_token", "decoder_pos_embed", "decoder_norm.weight",
            "decoder_norm.bias", "decoder_pred.weight", "decoder_pred.bias"]
    keys += [f"blocks.{i}.{part}" for i in range(vision.num_hidden_layers) for part in block]
    keys += [f"decoder_blocks.{i}.{part}" for i in range(vision.decoder_num_hidden_layers) for part in block]
    return keys


def _gather(state: dict, official_key: str, names: list[str]):
    import torch

    tensors = [state[name].detach().clone() for name in names]
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)  # fused qkv: rows (q, k, v)


def export_mrm(model, path, args: argparse.Namespace) -> None:
    """Write the image tower + decoder (+ the image->report map as MRM's `bert_mlp`) in MRM's layout, through the
    project's own key map (`map_original_key`), so that `convert_pretrained_towers` reads back exactly these tensors."""
    import torch

    from alta_hf.modeling_alta.convert_original_alta import map_original_key

    state = model.state_dict()
    weights = {key: _gather(state, key, map_original_key(key)) for key in _mrm_keys(model)}
    weights["bert_mlp.weight"] = state["image_to_text.weight"].detach().clone()
    weights["bert_mlp.bias"] = state["image_to_text.bias"].detach().clone()
    _atomic_torch_save({"model": weights, "args": args}, Path(path))


def export_text_folder(model, tokenizer_dir, folder) -> None:
    """Write the text tower and its masked-LM head as a BERT folder (`BertForMaskedLM` names, safetensors) with the
    tokenizer of `tokenizer_dir` (its `vocab.txt`, as CXR-BERT ships it, and its settings)."""
    import torch
    from transformers import BertForMaskedLM

    from alta_hf.modeling_alta.convert_original_alta import map_original_key

    text_config = model.config.text_config
    bert = BertForMaskedLM(text_config)
    state = model.state_dict()
    source = {}
    for key in bert.state_dict():
        names = map_original_key("bert_encoder." + key) if not key.endswith("position_ids") else []
        if names:
            source[key] = state[names[0]]
    missing = bert.load_state_dict(source, strict=False).missing_keys
    untied = [key for key in missing if key not in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")]
    if untied:
        raise RuntimeError(f"text tower export: no source for {untied}")
    bert.tie_weights()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        bert.save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copyfile(Path(tokenizer_dir) / name, folder / name)


def _atomic_torch_save(obj, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    torch.save(obj, staging)
    os.replace(staging, path)


def file_record(path: Path) -> dict:
    """Size and sha256 of a file (what metadata.json lists and tests check)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"bytes": path.stat().st_size, "sha256": digest}


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def _parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="demo_data", help="demo data (python -m alta_hf.dataset_scripts.demo)")
    parser.add_argument("--output-dir", default="demo_towers")
    parser.add_argument("--epochs", type=int, default=45, help="passes over the demo training split (45 made demo_towers/)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (tests, trials)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--warmup-epochs", type=float, default=2.0)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--mask-ratio", type=float, default=0.75, help="image patches masked (MAE's 0.75)")
    parser.add_argument("--pixel-target", choices=("normalised", "raw"), default="normalised",
                        help="reconstruct per-patch normalised pixels (MAE's norm_pix_loss, as MRM) or raw pixels")
    parser.add_argument("--mlm-weight", type=float, default=1.0, help="weight of the report MLM against reconstruction")
    parser.add_argument("--mlm-probability", type=float, default=0.5, help="report tokens masked (MRM's 0.5)")
    parser.add_argument("--condition-on", choices=("all-views", "frontal"), default="frontal",
                        help="views whose pooled [CLS] conditions the report MLM (all-views: as ALTA pools them)")
    parser.add_argument("--whole-report-fraction", type=float, default=0.5,
                        help="share of studies whose whole report is masked, so that it must be read off the image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/.pretrain_state/state.pt")
    return parser.parse_args(argv)


def _build(args):
    import torch
    from transformers import BertTokenizer

    from alta_hf.modeling_alta import AltaConfig, AltaForPreTraining
    from alta_hf.processing import AltaImageProcessor, AltaProcessor
    from alta_hf.training.data import StudyDataset, build_train_loader, load_pretraining_split

    rows, image_root, meta = load_pretraining_split(Path(args.data_dir) / "pretrain", "train")
    tokenizer = BertTokenizer.from_pretrained(meta["tokenizer_dir"])
    settings = json.loads(PROCESSOR_CONFIG.read_text())
    processor = AltaProcessor(AltaImageProcessor(**settings.pop("image_processor")), tokenizer,
                              **{**settings, "mlm_probability": args.mlm_probability})
    config = AltaConfig.from_json_file(TOWERS_CONFIG)
    config.text_config.vocab_size, config.text_config.pad_token_id = len(tokenizer), tokenizer.pad_token_id
    config.vision_config.mask_ratio = args.mask_ratio
    config.vision_config.norm_pix_loss = args.pixel_target == "normalised"
    config.mlm_loss_weight = args.mlm_weight
    torch.manual_seed(args.seed)
    model = AltaForPreTraining(config)
    trainable = set(tower_parameter_names(model))
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in trainable)
    dataset = StudyDataset(rows, processor, image_root, seed=args.seed)
    loader_args = SimpleNamespace(per_device_train_batch_size=args.batch_size, seed=args.seed)
    sampler, loader = build_train_loader(dataset, SimpleNamespace(dataloader_num_workers=args.num_workers), loader_args)
    return model, meta["tokenizer_dir"], dataset, sampler, loader, tokenizer


def mask_whole_reports(inputs: dict, tokenizer, fraction: float, generator) -> None:
    """Mask every word of a random `fraction` of the reports (in place): the MLM can then only read the findings off
    the image, which is what makes the image feature carry them (random 50 % masking leaves enough of a templated
    report to fill the gaps from the text alone)."""
    import torch

    ids = inputs["input_ids"]
    rows = torch.rand(ids.shape[0], generator=generator) < fraction
    special = torch.tensor(tokenizer.all_special_ids)
    words = (inputs["attention_mask"] == 1) & ~torch.isin(ids, special) & rows[:, None]
    inputs["mlm_input_ids"] = torch.where(words, tokenizer.mask_token_id, inputs["mlm_input_ids"])
    inputs["mlm_labels"] = torch.where(words, ids, inputs["mlm_labels"])


def _optimizer_and_schedule(model, args, steps_per_epoch: int, total_steps: int):
    import torch
    from transformers import get_cosine_schedule_with_warmup

    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.learning_rate, betas=(0.9, 0.95))
    warmup = math.ceil(args.warmup_epochs * steps_per_epoch)
    return optimizer, get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)


def _save_state(path: Path, model, optimizer, scheduler, generator, epoch: int, step: int, history: list,
                seconds: float) -> None:
    import torch

    trainable = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    _atomic_torch_save({"model": trainable, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "epoch": epoch, "step": step, "history": history, "seconds": seconds,
                        "rng": torch.random.get_rng_state(), "report_mask_rng": generator.get_state()}, path)


def _load_state(path: Path, model, optimizer, scheduler, generator) -> dict:
    import torch

    state = torch.load(path, weights_only=True)
    model.load_state_dict(state["model"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.random.set_rng_state(state["rng"])
    generator.set_state(state["report_mask_rng"])  # which reports are masked whole: resume replays the same draws
    return state


def _write_outputs(args, model, tokenizer_dir, output_dir: Path, summary: dict) -> dict:
    text_dir = output_dir / TEXT_FOLDER
    mrm_args = argparse.Namespace(model="demo_towers", mask_ratio=args.mask_ratio,
                                  norm_pix_loss=args.pixel_target == "normalised",
                                  batch_size=args.batch_size, epochs=args.epochs, lr=args.learning_rate,
                                  mlm_probability=args.mlm_probability, whole_report_fraction=args.whole_report_fraction,
                                  condition_on=args.condition_on, seed=args.seed)
    export_mrm(model, output_dir / "MRM.pth", mrm_args)
    export_text_folder(model, tokenizer_dir, text_dir)
    files = sorted([output_dir / "MRM.pth", *(p for p in text_dir.iterdir() if p.is_file())])
    summary["files"] = {str(p.relative_to(output_dir)): file_record(p) for p in files}
    (output_dir / "metadata.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv=None) -> dict:
    args = _parse(argv)
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, str(args.threads))
    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(args.threads)
    output_dir = Path(args.output_dir)
    model, tokenizer_dir, dataset, sampler, loader, tokenizer = _build(args)
    generator = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = len(loader)
    total_steps = args.epochs * steps_per_epoch
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)
    optimizer, scheduler = _optimizer_and_schedule(model, args, steps_per_epoch, args.epochs * steps_per_epoch)
    state_path = output_dir / _STATE_DIR / "state.pt"
    epoch, step, history, seconds = 0, 0, [], 0.0
    if args.resume and state_path.is_file():
        state = _load_state(state_path, model, optimizer, scheduler, generator)
        epoch, step, history, seconds = state["epoch"], state["step"], state["history"], state["seconds"]
        print(f"resumed at epoch {epoch}, step {step}")
    model.train()
    started = time.perf_counter() - seconds
    progress = tqdm(total=total_steps, initial=step, desc="pre-training the demo towers", dynamic_ncols=True)
    while step < total_steps:
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        sums = {"reconstruction_loss": 0.0, "mlm_loss": 0.0}
        batches = 0
        for batch in loader:
            if step >= total_steps:
                break
            inputs = {key: batch[key] for key in batch if key not in ("skipped_studies", "dropped_views")}
            if args.condition_on == "frontal":
                # the report is predicted from the current frontal alone (with all slots, which views exist is what
                # varies most between pooled features)
                inputs["view_mask"] = inputs["view_mask"].clone()
                inputs["view_mask"][:, 1:] = 0
            if args.whole_report_fraction:
                mask_whole_reports(inputs, tokenizer, args.whole_report_fraction, generator)
            output = model(**inputs, compute_contrastive_losses=False)
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            scheduler.step()
            step, batches = step + 1, batches + 1
            for name in sums:
                sums[name] += getattr(output, name).item()
            progress.update(1)
            progress.set_postfix(rec=f"{output.reconstruction_loss.item():.3f}", mlm=f"{output.mlm_loss.item():.3f}")
        epoch += 1
        means = {name: round(value / max(batches, 1), 4) for name, value in sums.items()}
        history.append({"epoch": epoch, "step": step, **means, "seconds": round(time.perf_counter() - started, 1)})
        progress.write(json.dumps(history[-1]))
        _save_state(state_path, model, optimizer, scheduler, generator, epoch, step, history,
                    time.perf_counter() - started)
    progress.close()
    wall = time.perf_counter() - started
    model.eval()
    summary = {
        "command": "python -m alta_hf.training.pretrain_demo_towers " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "seed": args.seed, "steps": step, "epochs": epoch, "steps_per_epoch": steps_per_epoch,
        "batch_size": args.batch_size, "learning_rate": args.learning_rate, "mask_ratio": args.mask_ratio,
        "mlm_probability": args.mlm_probability, "whole_report_fraction": args.whole_report_fraction,
        "pixel_target": args.pixel_target, "mlm_weight": args.mlm_weight,
        "condition_on": args.condition_on, "train_studies": len(dataset),
        "wall_seconds": round(wall, 1), "seconds_per_step": round(wall / max(step, 1), 3),
        "cpu": _cpu_name(), "torch_threads": args.threads, "dataloader_workers": args.num_workers,
        "torch": torch.__version__, "final_losses": history[-1] if history else {}, "history": history,
        "tower_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    return _write_outputs(args, model, tokenizer_dir, output_dir, summary)


if __name__ == "__main__":
    main(sys.argv[1:])
