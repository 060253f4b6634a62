"""One ALTA training step (adapters + the spec's trainable set) vs the same model with every parameter trainable.

    python -m benchmarks.bench_model_training_step [--batch-size 2] [--steps 3] [--rounds 2]

Base geometry (AltaConfig()), CPU, train mode, AdamW over the trainable parameters; a step is zero_grad +
forward (all four losses) + backward + optimizer step. Each configuration runs in its own subprocess (rounds
interleave the two, medians are reported) so that peak memory is measured per configuration: the Linux peak
resident set size (VmHWM of /proc/self/status, reset through /proc/self/clear_refs after the warm-up step), i.e.
weights + gradients + optimizer state + activations. "over weights" subtracts the resident size of the built
model before its first step.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (this benchmark needs Linux)")


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def time_steps(step, steps: int, warmup: bool = True) -> tuple[float, int]:
    """Run `step()` `steps` times: (median seconds, peak resident KiB). The warm-up step (kernels, optimizer state)
    is untimed and the peak is reset after it; without warm-up the peak covers the whole process."""
    if warmup:
        step()
        _reset_peak_rss()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), _status_kib("VmHWM")


def random_batch(config, batch_size: int, generator: torch.Generator) -> dict:
    """Random pre-training inputs at `config`'s geometry (official report length 128)."""
    vision, text = config.vision_config, config.text_config
    size, target, length = vision.image_size, config.reconstruction_image_size, 128
    input_ids = torch.randint(1000, text.vocab_size, (batch_size, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[:, length * 3 // 4 :] = 0
    corrupt = torch.rand(input_ids.shape, generator=generator) < 0.25
    return {
        "pixel_values": torch.randn(batch_size, config.num_view_slots, vision.num_channels, size, size, generator=generator),
        "view_mask": torch.ones(batch_size, config.num_view_slots, dtype=torch.long),
        "target_pixel_values": torch.randn(batch_size, vision.num_channels, target, target, generator=generator),
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mlm_input_ids": torch.where(corrupt, torch.full_like(input_ids, 103), input_ids),
        "mlm_labels": torch.where(corrupt, input_ids, torch.full_like(input_ids, -100)),
    }


def worker(mode: str, batch_size: int, steps: int) -> dict:
    from modeling_alta import AltaConfig, AltaForPreTraining

    torch.manual_seed(0)
    model = AltaForPreTraining(AltaConfig()).train()
    if mode == "full":
        model.requires_grad_(True)
    trainable, total = model.trainable_parameter_counts()
    rss_model = _status_kib("VmRSS")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = random_batch(model.config, batch_size, torch.Generator().manual_seed(1))

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()

    step_s, peak = time_steps(step, steps)
    return {
        "mode": mode,
        "trainable": trainable,
        "total": total,
        "step_s": step_s,
        "peak_rss_mib": peak / 1024,
        "peak_over_weights_mib": (peak - rss_model) / 1024,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run (after one warm-up step)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per configuration")
    parser.add_argument("--worker", choices=["alta", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch_size, args.steps)))
        return

    runs = {"alta": [], "full": []}
    for _ in range(args.rounds):
        for mode in runs:
            command = [sys.executable, "-m", "benchmarks.bench_model_training_step", "--worker", mode, "--batch-size", str(args.batch_size),
                       "--steps", str(args.steps)]
            output = subprocess.run(command, check=True, cwd=REPO_ROOT, capture_output=True, text=True).stdout
            runs[mode].append(json.loads(output.strip().splitlines()[-1]))
    summary = {}
    for mode, results in runs.items():
        summary[mode] = {key: statistics.median(r[key] for r in results)
                         for key in ("step_s", "peak_rss_mib", "peak_over_weights_mib")}
        summary[mode].update(trainable=results[0]["trainable"], total=results[0]["total"])
    alta, full = summary["alta"], summary["full"]
    print(f"batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds, torch threads {torch.get_num_threads()}")
    print("| configuration | trainable params | step time (s) | peak RSS (MiB) | peak over weights (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for name, row in (("ALTA (adapters + spec set)", alta), ("everything trainable", full)):
        print(f"| {name} | {row['trainable']:,} | {row['step_s']:.2f} | {row['peak_rss_mib']:.0f} | "
              f"{row['peak_over_weights_mib']:.0f} |")
    print(f"| ratio ALTA / full | | {alta['step_s'] / full['step_s']:.2f} | "
          f"{alta['peak_rss_mib'] / full['peak_rss_mib']:.2f} | "
          f"{alta['peak_over_weights_mib'] / full['peak_over_weights_mib']:.2f} |")


if __name__ == "__main__":
    main()
