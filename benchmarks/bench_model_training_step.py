"""One ALTA training step, forward + backward: ours vs the full-work path vs every weight trainable, with phases.

    python -m benchmarks.bench_model_training_step [--batch-size 2] [--steps 2] [--rounds 3] [--lengths realistic]

Base geometry (AltaConfig()), random weights, train mode, all four losses; a step is zero_grad + forward +
backward (no optimizer step). Configurations:

- `ours`: the training-mode default (`full_work=False`): text trimmed to the batch's longest report, MLM head on
  the labelled positions only (modeling_alta/step_work_alta.py);
- `full work`: `full_work=True`, every output at every position as the official code (the stand-in for the
  official code's time: parity with it is exact on this path);
- `all trainable`: ours with every parameter trainable (the cost of not freezing the towers);
- `all trainable, full work`: the full-work path with every parameter trainable (what the fully trainable model
  cost before this benchmark's reductions).

Reports are padded to 128 tokens, as the official collator does. `--lengths realistic` draws their lengths from
the FINDINGS + IMPRESSION sections of the Indiana University reports (`dataset_scripts.torchxrayvision_data`;
approximate WordPiece count: words and punctuation + [CLS] + [SEP], capped at 128); `--lengths full` fills all
128 tokens (nothing to trim). 25 % of the report tokens are corrupted for MLM.

Each configuration runs in its own subprocess, the rounds alternate them and medians are reported, so the
ratios are measured side by side on a shared machine. Per step: wall time by phase (image tower, text tower,
decoder, MLM head, the rest of the forward = projections and losses, backward), the peak resident set size over
the model's own (Linux VmHWM, reset after the warm-up step, minus the resident size of the built model), the
bytes autograd saves for backward (`torch.autograd.graph.saved_tensors_hooks`, parameters excluded), the process
CPU time of a step (less sensitive than wall time to other jobs on the machine) and the floating-point operations
of a step (`torch.utils.flop_counter.FlopCounterMode`: matmuls, convolutions, attention; exact, noise-free).
`--bf16` runs the step under CPU bf16 autocast (it pays only with native bf16 matmuls: `amx_bf16` or
`avx512_bf16` in /proc/cpuinfo), and adds `ours, autocast saving its casts`: ours with the frozen linears as plain
`nn.Linear`, so that autograd keeps autocast's bf16 copy of each frozen weight for backward
(`keep_frozen_weights_uncast` undone: what the recast in backward saves, and what it costs).
"""

import argparse
import contextlib
import functools
import json
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO_ROOT = Path(__file__).resolve().parents[1]
REPORT_LENGTH = 128
MODES = ("ours", "full work", "all trainable", "all trainable, full work")
PLAIN_LINEARS = "ours, autocast saving its casts"  # --bf16 only: frozen linears as plain nn.Linear under autocast
PHASES = ("image tower", "text tower", "decoder", "MLM head", "projections + losses", "backward")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (this benchmark needs Linux)")


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def report_token_lengths(kind: str, count: int, generator: torch.Generator) -> tuple[list[int], str]:
    """`count` report lengths in tokens ([CLS] and [SEP] included, at most 128) and where they came from."""
    if kind == "full":
        return [REPORT_LENGTH] * count, "all 128 tokens"
    from alta_hf.dataset_scripts.torchxrayvision_data import (
        TorchXRayVisionUnavailable,
        fetch_torchxrayvision_file,
        read_indiana_reports,
    )

    try:
        reports = read_indiana_reports(fetch_torchxrayvision_file("NLMCXR_reports.tgz"))
    except TorchXRayVisionUnavailable as error:  # e.g. a GPU machine without network access and no cached wheel
        print(f"real report lengths unavailable ({error}); using synthetic ones", file=sys.stderr)
        pool, source = torch.randint(12, REPORT_LENGTH + 1, (2000,), generator=generator).tolist(), "synthetic 12-128"
    else:
        pool = [min(len(re.findall(r"\w+|[^\w\s]", text)) + 2, REPORT_LENGTH) for text in reports]
        source = f"IU FINDINGS + IMPRESSION ({len(pool)} reports, median {statistics.median(pool)} tokens)"
    pick = torch.randint(len(pool), (count,), generator=generator).tolist()
    return [pool[i] for i in pick], source


def pretraining_batch(config, lengths: list[int], generator: torch.Generator) -> dict:
    """Random pre-training inputs at `config`'s geometry, reports of `lengths` tokens padded to 128."""
    vision, text = config.vision_config, config.text_config
    size, target, batch_size = vision.image_size, config.reconstruction_image_size, len(lengths)
    input_ids = torch.randint(1000, text.vocab_size, (batch_size, REPORT_LENGTH), generator=generator)
    attention_mask = (torch.arange(REPORT_LENGTH) < torch.tensor(lengths)[:, None]).long()
    input_ids = input_ids * attention_mask  # [PAD] = 0 after the report
    corrupt = (torch.rand(input_ids.shape, generator=generator) < 0.25) & attention_mask.bool()
    return {
        "pixel_values": torch.randn(batch_size, config.num_view_slots, vision.num_channels, size, size, generator=generator),
        "view_mask": torch.ones(batch_size, config.num_view_slots, dtype=torch.long),
        "target_pixel_values": torch.randn(batch_size, vision.num_channels, target, target, generator=generator),
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mlm_input_ids": torch.where(corrupt, torch.full_like(input_ids, 103), input_ids),
        "mlm_labels": torch.where(corrupt, input_ids, torch.full_like(input_ids, -100)),
    }


def random_batch(config, batch_size: int, generator: torch.Generator) -> dict:
    """`pretraining_batch` with every report 96 tokens long (3/4 of the padded length; bench_memory.py's inputs)."""
    return pretraining_batch(config, [REPORT_LENGTH * 3 // 4] * batch_size, generator)


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


class PhaseTimer:
    """Wall time of the model's phases, by wrapping the methods that run them on this model instance."""

    def __init__(self, model):
        self.seconds = defaultdict(float)
        for owner, name, phase in (
            (model, "encode_views", "image tower"),
            (model.alta, "text_hidden_states", "text tower"),
            (model.decoder, "forward", "decoder"),
            (model.mlm_head, "forward", "MLM head"),
        ):
            setattr(owner, name, self._timed(getattr(owner, name), phase))

    def _timed(self, method, phase):
        @functools.wraps(method)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start
        return timed


def saved_for_backward_mib(model, run) -> float:
    """MiB of the distinct tensors autograd saves for backward during `run()` (parameters excluded; a backward
    inside `run` unpacks them, which the hooks do not see)."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(storages.values()) / 2**20


def worker(mode: str, lengths: list[int], steps: int, bf16: bool) -> dict:
    from alta_hf.modeling_alta import AltaConfig, AltaForPreTraining

    torch.manual_seed(0)
    model = AltaForPreTraining(AltaConfig()).train()
    if mode.startswith("all trainable"):
        model.requires_grad_(True)
    if mode == PLAIN_LINEARS:  # undo keep_frozen_weights_uncast: autocast's bf16 copies are saved for backward
        for module in model.modules():
            if type(module) is torch.nn.Linear:
                vars(module).pop("forward", None)
    rss_model = _status_kib("VmRSS")
    batch = pretraining_batch(model.config, lengths, torch.Generator().manual_seed(1))
    full_work = mode.endswith("full work")
    timer = PhaseTimer(model)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def forward():
        with autocast:
            return model(**batch, full_work=full_work).loss

    def step() -> dict:
        model.zero_grad(set_to_none=True)
        timer.seconds.clear()
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = forward()
        middle = time.perf_counter()
        loss.backward()
        end = time.perf_counter()
        phases = dict(timer.seconds)
        phases["projections + losses"] = middle - start - sum(phases.values())
        phases["backward"] = end - middle
        return {"step_s": end - start, "cpu_s": time.process_time() - cpu_start, **phases}

    with FlopCounterMode(display=False) as flops:  # the warm-up step (kernels, allocator)
        saved = saved_for_backward_mib(model, step)
    _reset_peak_rss()
    timings = [step() for _ in range(steps)]
    result = {key: statistics.median(t[key] for t in timings) for key in timings[0]}
    return {
        **result,
        "mode": mode,
        "trainable": model.trainable_parameter_counts()[0],
        "growth_mib": (_status_kib("VmHWM") - rss_model) / 1024,
        "saved_mib": saved,
        "gflop": flops.get_total_flops() / 1e9,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per run (after one warm-up step)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per configuration")
    parser.add_argument("--lengths", choices=["realistic", "full"], default="realistic")
    parser.add_argument("--bf16", action="store_true", help="CPU bf16 autocast")
    parser.add_argument("--worker", choices=(*MODES, PLAIN_LINEARS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-lengths", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        lengths = json.loads(args.worker_lengths)
        print(json.dumps(worker(args.worker, lengths, args.steps, args.bf16)))
        return

    lengths, source = report_token_lengths(args.lengths, args.batch_size, torch.Generator().manual_seed(0))
    modes = (MODES[0], PLAIN_LINEARS, *MODES[1:]) if args.bf16 else MODES
    runs = {mode: [] for mode in modes}
    for _ in range(args.rounds):
        for mode in modes:
            command = [sys.executable, "-m", "benchmarks.bench_model_training_step", "--worker", mode, "--worker-lengths", json.dumps(lengths),
                       "--steps", str(args.steps)] + (["--bf16"] if args.bf16 else [])
            output = subprocess.run(command, check=True, cwd=REPO_ROOT, capture_output=True, text=True).stdout
            runs[mode].append(json.loads(output.strip().splitlines()[-1]))
    keys = ("gflop", "cpu_s", "step_s", "growth_mib", "saved_mib", *PHASES)
    summary = {mode: {key: statistics.median(r[key] for r in results) for key in keys} for mode, results in runs.items()}
    flags = Path("/proc/cpuinfo").read_text().split()
    native = "+".join(f for f in ("amx_bf16", "avx512_bf16") if f in flags) or "none"
    print(f"batch {args.batch_size}, report lengths {lengths} ({source}), padded to {REPORT_LENGTH}; "
          f"{args.steps} steps x {args.rounds} rounds, torch threads {torch.get_num_threads()}, "
          f"{'bf16 autocast' if args.bf16 else 'float32'}, native bf16: {native}")
    print("| configuration | trainable params | GFLOP | CPU (s) | step (s) | " + " | ".join(PHASES)
          + " | peak growth (MiB) | saved for backward (MiB) |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(PHASES) + "---:|---:|")
    for mode in modes:
        row = summary[mode]
        print(f"| {mode} | {runs[mode][0]['trainable']:,} | {row['gflop']:.0f} | {row['cpu_s']:.2f} | {row['step_s']:.2f} | "
              + " | ".join(f"{row[phase]:.2f}" for phase in PHASES)
              + f" | {row['growth_mib']:.0f} | {row['saved_mib']:.0f} |")
    ours = summary["ours"]
    for other in modes[1:]:
        print(f"| ratio ours / {other} | | {ours['gflop'] / summary[other]['gflop']:.2f} | "
              f"{ours['cpu_s'] / summary[other]['cpu_s']:.2f} | {ours['step_s'] / summary[other]['step_s']:.2f} | "
              + " | ".join(f"{ours[p] / summary[other][p]:.2f}" if summary[other][p] > 0 else "" for p in PHASES)
              + f" | {ours['growth_mib'] / summary[other]['growth_mib']:.2f} | "
              f"{ours['saved_mib'] / summary[other]['saved_mib']:.2f} |")


if __name__ == "__main__":
    main()
