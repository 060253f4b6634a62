"""Peak memory and time of one ALTA training step: gradient checkpointing, and cached contrastive accumulation.

    python -m benchmarks.bench_memory checkpointing [--batch-size 4] [--steps 2] [--rounds 2]
    python -m benchmarks.bench_memory cached [--geometry narrow] [--batch-size 96] [--micro-batches 8] [--rounds 1]

`checkpointing`: base geometry (`AltaConfig()`), one step without and with `model.gradient_checkpointing_enable()`.
`cached`: a plain step on a batch of `--batch-size` vs `training.grad_cache.cached_contrastive_step` over
`--micro-batches` micro-batches of the same total (same global and local contrastive batch). `--geometry narrow`
keeps every input size of the base geometry (224-px slots, 448-px target, 196 patches, 128 tokens, the 30,522-token
vocabulary, 128-d projections: the contrastive losses and the MLM logits have their real sizes) and narrows the
towers and the decoder, which keeps a batch of 96 within a small machine's memory and time.

A step is zero_grad + forward (all four losses) + backward + AdamW over the trainable parameters, train mode.
Every configuration runs in its own subprocess (rounds interleave them, medians are reported); peak memory is the
Linux peak resident set size of that process (VmHWM of /proc/self/status, reset through /proc/self/clear_refs
after a warm-up step, unless --no-warmup), i.e. weights + gradients + optimizer state + activations + allocator
caches; "over weights" subtracts the resident size of the built model before its first step.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

from benchmarks.bench_model_training_step import _status_kib, random_batch, time_steps

# Narrower towers at the base input geometry (see the module docstring).
NARROW_VISION = {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 3, "intermediate_size": 768,
                 "decoder_hidden_size": 128, "decoder_num_hidden_layers": 2, "decoder_num_attention_heads": 4,
                 "decoder_intermediate_size": 512}
NARROW_TEXT = {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 3, "intermediate_size": 768}

MODES = {"checkpointing": ("plain", "checkpointing"), "cached": ("plain", "cached")}


def _config(geometry: str):
    from alta_hf.modeling_alta import AltaConfig

    if geometry == "base":
        return AltaConfig()
    return AltaConfig(vision_config=NARROW_VISION, text_config=NARROW_TEXT)


def worker(mode: str, geometry: str, batch_size: int, micro_batches: int, steps: int, warmup: bool) -> dict:
    from alta_hf.modeling_alta import AltaForPreTraining
    from alta_hf.training.grad_cache import cached_contrastive_step

    torch.manual_seed(0)
    model = AltaForPreTraining(_config(geometry)).train()
    if mode == "checkpointing":
        model.activation_checkpointing_enable()
    rss_model = _status_kib("VmRSS")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = random_batch(model.config, batch_size, torch.Generator().manual_seed(1))
    size = batch_size // micro_batches
    parts = [{key: value[i * size : (i + 1) * size] for key, value in batch.items()} for i in range(micro_batches)]
    losses = []

    def step():
        optimizer.zero_grad(set_to_none=True)
        if mode == "cached":
            loss = cached_contrastive_step(model, parts)["loss"]
        else:
            loss = model(**batch).loss
            loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))

    step_s, peak = time_steps(step, steps, warmup)
    return {"step_s": step_s, "peak_rss_mib": peak / 1024,
            "peak_over_weights_mib": (peak - rss_model) / 1024, "first_loss": losses[0]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("comparison", choices=sorted(MODES))
    parser.add_argument("--geometry", choices=["base", "narrow"], default=None,
                        help="default: base for checkpointing, narrow for cached")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 4 (checkpointing), 96 (cached)")
    parser.add_argument("--micro-batches", type=int, default=8, help="cached: micro-batches per step")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default 2; 1 for cached)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating runs per configuration")
    parser.add_argument("--no-warmup", action="store_true", help="measure the first step (peak not reset)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (default: torch's); 1 is steadier on a shared machine")
    parser.add_argument("--worker", choices=["plain", "checkpointing", "cached"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cached = args.comparison == "cached"
    geometry = args.geometry or ("narrow" if cached else "base")
    batch_size = args.batch_size or (96 if cached else 4)
    micro_batches = args.micro_batches if cached else 1
    steps = args.steps or (1 if cached else 2)
    rounds = args.rounds or (1 if cached else 2)
    if batch_size % micro_batches:
        parser.error(f"--batch-size {batch_size} is not a multiple of --micro-batches {micro_batches}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, geometry, batch_size, micro_batches, steps, not args.no_warmup)))
        return

    runs = {mode: [] for mode in MODES[args.comparison]}
    for _ in range(rounds):
        for mode in runs:
            command = [sys.executable, "-m", "benchmarks.bench_memory", args.comparison, "--worker", mode, "--geometry", geometry,
                       "--batch-size", str(batch_size), "--micro-batches", str(micro_batches), "--steps", str(steps)]
            command += ["--no-warmup"] if args.no_warmup else []
            command += ["--threads", str(args.threads)] if args.threads else []
            output = subprocess.run(command, check=True, cwd=REPO_ROOT, capture_output=True, text=True).stdout
            runs[mode].append(json.loads(output.strip().splitlines()[-1]))
    keys = ("step_s", "peak_rss_mib", "peak_over_weights_mib", "first_loss")
    summary = {mode: {key: statistics.median(r[key] for r in results) for key in keys} for mode, results in runs.items()}
    plain, other = summary["plain"], summary[MODES[args.comparison][1]]
    label = f"cached, {micro_batches} x {batch_size // micro_batches}" if cached else "checkpointing"
    print(f"{geometry} geometry, batch {batch_size}, {steps} step(s) x {rounds} round(s), "
          f"torch threads {torch.get_num_threads()}, warm-up {'off' if args.no_warmup else 'on'}")
    print("| configuration | step time (s) | peak RSS (MiB) | peak over weights (MiB) | first loss |")
    print("|---|---:|---:|---:|---:|")
    for name, row in ((f"plain, batch {batch_size}", plain), (label, other)):
        print(f"| {name} | {row['step_s']:.2f} | {row['peak_rss_mib']:.0f} | {row['peak_over_weights_mib']:.0f} | "
              f"{row['first_loss']:.6f} |")
    print(f"| ratio {MODES[args.comparison][1]} / plain | {other['step_s'] / plain['step_s']:.2f} | "
          f"{other['peak_rss_mib'] / plain['peak_rss_mib']:.2f} | "
          f"{other['peak_over_weights_mib'] / plain['peak_over_weights_mib']:.2f} | |")


if __name__ == "__main__":
    main()
