"""ALTA training throughput and peak memory on one CUDA GPU: base geometry, bf16 autocast, with and without
gradient checkpointing, ours vs the full-work path.

    python -m benchmarks.bench_gpu [--batch-size 24] [--steps 10] [--warmup 3] [--lengths realistic]

A step is zero_grad + forward (all four losses) + backward + AdamW over the trainable parameters, train mode,
under `torch.autocast("cuda", dtype=torch.bfloat16)` (fp32 weights and optimizer state), batch 24 studies per
device (4 view slots, 448-px targets, reports padded to 128 tokens with the IU FINDINGS + IMPRESSION lengths of
bench_model_training_step.py). Configurations run one after another in this process, each on a fresh model, in
two alternating rounds (medians); `torch.cuda.max_memory_allocated` is reset before the timed steps of each run.
Reported: training samples/s, seconds per step, peak allocated memory.
"""

import argparse
import statistics
import time

import torch

from benchmarks.bench_model_training_step import pretraining_batch, report_token_lengths

CONFIGURATIONS = {
    "ours": {"full_work": False, "checkpointing": False},
    "ours + gradient checkpointing": {"full_work": False, "checkpointing": True},
    "full work": {"full_work": True, "checkpointing": False},
    "full work + gradient checkpointing": {"full_work": True, "checkpointing": True},
}


def run(batch_cpu: dict, full_work: bool, checkpointing: bool, steps: int, warmup: int) -> dict:
    from alta_hf.modeling_alta import AltaConfig, AltaForPreTraining

    torch.manual_seed(0)
    device = torch.device("cuda")
    model = AltaForPreTraining(AltaConfig()).to(device).train()
    if checkpointing:
        model.activation_checkpointing_enable()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = {key: value.to(device) for key, value in batch_cpu.items()}

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**batch, full_work=full_work).loss
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30
    del model, optimizer, batch
    torch.cuda.empty_cache()
    return {"step_s": seconds, "samples_s": len(batch_cpu["input_ids"]) / seconds, "peak_gib": peak}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=24, help="studies per device")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per configuration")
    parser.add_argument("--lengths", choices=["realistic", "full"], default="realistic")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    if not torch.cuda.is_bf16_supported():
        raise SystemExit(f"{torch.cuda.get_device_name()} has no bf16 support")
    from alta_hf.modeling_alta import AltaConfig

    lengths, source = report_token_lengths(args.lengths, args.batch_size, torch.Generator().manual_seed(0))
    batch = pretraining_batch(AltaConfig(), lengths, torch.Generator().manual_seed(1))
    results = {name: [] for name in CONFIGURATIONS}
    for _ in range(args.rounds):
        for name, settings in CONFIGURATIONS.items():
            results[name].append(run(batch, steps=args.steps, warmup=args.warmup, **settings))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, bf16 autocast, batch {args.batch_size} "
          f"per device, reports: {source}, longest {max(lengths)} tokens; {args.steps} timed steps after "
          f"{args.warmup} warm-up, {args.rounds} rounds (medians)")
    print("| configuration | samples/s | step (s) | peak allocated (GiB) |")
    print("|---|---:|---:|---:|")
    for name, runs in results.items():
        row = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        print(f"| {name} | {row['samples_s']:.1f} | {row['step_s']:.3f} | {row['peak_gib']:.2f} |")


if __name__ == "__main__":
    main()
