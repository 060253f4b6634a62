"""Training throughput of `train.py` on the demo geometry: 1 vs 2 CPU processes, and the cost of data loading.

    python -m benchmarks.bench_training_throughput --data /tmp/demo_data [--steps 20] [--rounds 1]
    python -m benchmarks.bench_training_throughput --quick                  # smoke check: a few small steps

Part 1 launches the real training loop (`accelerate launch train.py --config configs/demo.yaml`, no validation, no
checkpoints within the run) three times with the same per-device batch: 1 process with OMP_NUM_THREADS=1, 1 process
with OMP_NUM_THREADS=2 (the fair single-process use of 2 cores) and 2 processes (gloo, `--multi_gpu
--num_processes 2`) with OMP_NUM_THREADS=1 each. train.py logs every step to TensorBoard; samples/s = samples of the
timed steps / the wall time between their log events. The first `--warmup-steps` steps of the run and the first step
of every later epoch (DataLoader workers restart, the end-of-epoch checkpoint) are not timed. With `--rounds N` the
three runs alternate N times and medians are reported.

Part 2 works in this process, with train.py's own builders (arguments, model, dataset, DataLoader, optimizer), the
configured loader workers and `--threads` torch threads: the DataLoader alone (seconds per batch), the optimizer step
on batches already in memory (forward with all four losses + backward + gradient clipping + AdamW), and the same step
pulling each batch from the DataLoader.

Without `--data`, demo pre-training data are generated into a temporary folder (`dataset_scripts.demo`: 1,500
training studies as by default, 300 with `--quick`; the evaluation splits, unused here, get one image each).
"""

import argparse
import itertools
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

from alta_hf.dataset_scripts.demo import build_demo_data
from alta_hf.dataset_scripts.demo_studies import DemoOptions
from alta_hf.modeling_alta.losses_alta import clamp_logit_scales_
from devtools.processes import run_accelerate_on_cpu
from alta_hf.training.arguments import parse_arguments
from alta_hf.training.data import SAMPLE_COUNTERS, StudyDataset, build_train_loader, load_pretraining_split
from alta_hf.training.model_setup import build_model_and_processor
from alta_hf.training.optimization import build_optimizer, scaled_learning_rate

from benchmarks.bench_dataset_mimic import cpu_name

DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
SAMPLES_TAG = "train/samples_per_second"
# batches part 2 keeps in memory (about 25 MB each at batch 32)
_KEPT_BATCHES = 4
# name, processes, OMP threads per process
LAUNCHES = (("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 1, 2), ("2 processes, 1 thread each", 2, 1))


def benchmark_config(folder: Path) -> Path:
    """configs/demo.yaml without the per-epoch validation and with no checkpoint inside the run."""
    values = yaml.safe_load(DEMO_CONFIG.read_text())
    for key in ("validation_task", "validation_data", "validation_split"):
        values.pop(key, None)
    values["checkpointing_steps"] = 10**9
    path = folder / "bench_demo.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def training_arguments(config: Path, data: Path, output_dir: Path, args) -> list[str]:
    return ["--config", str(config), "--train_dataset", str(data / "pretrain"), "--output_dir", str(output_dir),
            "--per_device_train_batch_size", str(args.batch_size),
            "--max_train_steps", str(args.warmup_steps + args.steps),
            "--logging_steps", "1", "--report_to", "tensorboard"]


# ----- part 1: train.py, 1 vs 2 processes ---------------------------------------------------------------------------

def launch_train_py(processes: int, threads: int, arguments: list[str], timeout: float) -> str:
    """Run train.py under `accelerate launch` on the CPU; returns its stderr (the log)."""
    result = run_accelerate_on_cpu(["train.py", *arguments], processes=processes, threads=threads, timeout=timeout,
                                   cwd=REPO_ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"train.py ({processes} process(es), {threads} thread(s)) failed:\n{result.stderr[-3000:]}")
    return result.stderr


def logged_steps(log_dir: Path) -> list:
    """The `train/samples_per_second` events (step, wall_time, value) train.py wrote under `log_dir`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for events_file in sorted(log_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events_file), size_guidance={"scalars": 0})
        accumulator.Reload()
        if SAMPLES_TAG in accumulator.Tags()["scalars"]:
            return sorted(accumulator.Scalars(SAMPLES_TAG), key=lambda event: event.step)
    raise RuntimeError(f"no {SAMPLES_TAG} in the TensorBoard logs under {log_dir}")


def throughput(events: list, updates_per_epoch: int, samples_per_step: int, warmup_steps: int) -> dict:
    """Samples/s over the timed steps, from the wall times of consecutive log events."""
    durations, logged = [], []
    for previous, event in zip(events, events[1:]):
        first_of_epoch = (event.step - 1) % updates_per_epoch == 0
        if event.step > warmup_steps and not first_of_epoch:
            durations.append(event.wall_time - previous.wall_time)
            logged.append(event.value)
    if not durations:
        raise RuntimeError(f"no timed step: raise --steps above --warmup-steps ({warmup_steps}) and the epoch starts")
    return {"timed_steps": len(durations), "seconds_per_step": sum(durations) / len(durations),
            "samples_per_second": samples_per_step * len(durations) / sum(durations),
            # what train.py itself reports per step (its window excludes the logging), harmonic mean
            "logged_samples_per_second": len(logged) / sum(1 / value for value in logged)}


def measure_processes(config: Path, data: Path, work: Path, args) -> list[dict]:
    rounds = {name: [] for name, _, _ in LAUNCHES}
    for round_index in range(args.rounds):
        for name, processes, threads in LAUNCHES:
            output_dir = work / f"run{round_index}-{processes}x{threads}"
            log = launch_train_py(processes, threads, training_arguments(config, data, output_dir, args), args.timeout)
            match = re.search(r"(\d+) updates per epoch", log)
            if match is None:
                raise RuntimeError(f"train.py did not log its updates per epoch:\n{log[-3000:]}")
            result = throughput(logged_steps(output_dir / "logs"), int(match.group(1)), args.batch_size * processes,
                                args.warmup_steps)
            print(f"  round {round_index + 1}, {name}: {result['samples_per_second']:.2f} samples/s "
                  f"({result['timed_steps']} steps)", flush=True)
            rounds[name].append(result)
    summary = []
    for name, processes, threads in LAUNCHES:
        results = rounds[name]
        summary.append({"name": name, "processes": processes, "threads_per_process": threads,
                        "per_device_batch": args.batch_size, "timed_steps": results[0]["timed_steps"],
                        **{key: statistics.median(result[key] for result in results)
                           for key in ("seconds_per_step", "samples_per_second", "logged_samples_per_second")}})
    return summary


# ----- part 2: the step with and without data loading ---------------------------------------------------------------

def timed(function, repeats: int) -> float:
    """Mean seconds of `function()` over `repeats` calls (the mean, not the median: it gives the throughput)."""
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def measure_loading(config: Path, data: Path, work: Path, args) -> dict:
    torch.set_num_threads(args.threads)
    model_args, data_args, training_args = parse_arguments(training_arguments(config, data, work / "loading", args))
    torch.manual_seed(training_args.seed)
    rows, image_root, dataset_meta = load_pretraining_split(data_args.train_dataset, data_args.train_split,
                                                            data_args.image_root)
    model, processor = build_model_and_processor(model_args, dataset_meta)
    model.train()
    train_set = StudyDataset(rows, processor, image_root, training_args.seed)
    sampler, loader = build_train_loader(train_set, data_args, training_args)
    optimizer = build_optimizer(model, scaled_learning_rate(training_args, 1), training_args)
    logit_scale_max = model.config.logit_scale_max
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    needed = args.warmup_steps + args.steps
    if len(loader) < needed + 1:
        raise ValueError(f"{len(rows)} studies give {len(loader)} batches of {args.batch_size}; part 2 needs "
                         f"{needed + 1} in one epoch: lower --steps / --batch-size or give more data")

    def optimizer_step(batch: dict) -> None:
        batch = {key: value for key, value in batch.items() if key not in SAMPLE_COUNTERS}
        model(**batch).loss.backward()
        if training_args.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(parameters, training_args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
        clamp_logit_scales_(model, logit_scale_max)

    def epoch_batches(epoch: int):
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        return iter(loader)

    def loader_alone() -> tuple[float, list]:
        """Seconds per batch of the DataLoader alone, and a few of its batches (its workers stop on return)."""
        batches, kept = epoch_batches(0), []
        next(batches)  # waits for the workers to start: not timed

        def pull():
            batch = next(batches)
            if len(kept) < _KEPT_BATCHES:
                kept.append(batch)

        return timed(pull, needed), kept

    def step_seconds(batches) -> float:
        for _ in range(args.warmup_steps):
            optimizer_step(next(batches))
        return timed(lambda: optimizer_step(next(batches)), args.steps)

    loader_seconds, kept = loader_alone()
    in_memory_seconds = step_seconds(itertools.cycle(kept))
    # as train.py does: a new epoch (the workers start again, in the warm-up steps), each batch from the DataLoader
    loop_seconds = step_seconds(epoch_batches(1))
    return {"threads": args.threads, "loader_workers": data_args.dataloader_num_workers,
            "per_device_batch": args.batch_size, "timed_steps": args.steps,
            "loader_seconds_per_batch": loader_seconds, "step_seconds_in_memory": in_memory_seconds,
            "step_seconds_with_loading": loop_seconds,
            "loading_overhead": loop_seconds / in_memory_seconds - 1,
            "two_process_ceiling": 2 * in_memory_seconds / (in_memory_seconds + loader_seconds)}


# ----- report -------------------------------------------------------------------------------------------------------

def markdown(results: dict) -> str:
    runs = results["processes"]
    one, fair = runs[0]["samples_per_second"], runs[1]["samples_per_second"]
    lines = ["| run (train.py, accelerate launch) | per-device batch | timed steps | s/step | samples/s | "
             "train.py's logged samples/s | vs 1 process, 1 thread | vs 1 process, 2 threads |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        rate = run["samples_per_second"]
        lines.append(f"| {run['name']} | {run['per_device_batch']} | {run['timed_steps']} | "
                     f"{run['seconds_per_step']:.3f} | {rate:.2f} | {run['logged_samples_per_second']:.2f} | "
                     f"{rate / one:.2f}x | {rate / fair:.2f}x |")
    loading = results["loading"]
    lines += ["", f"| one process, {loading['threads']} torch thread(s), {loading['loader_workers']} loader worker(s), "
                  f"batch {loading['per_device_batch']} | seconds |", "|---|---:|",
              f"| optimizer step, batches in memory | {loading['step_seconds_in_memory']:.3f} |",
              f"| optimizer step, each batch pulled from the DataLoader | {loading['step_seconds_with_loading']:.3f} |",
              f"| DataLoader alone, per batch | {loading['loader_seconds_per_batch']:.3f} |",
              f"| loading overhead (with / without - 1) | {100 * loading['loading_overhead']:+.1f} % |",
              "", "2 processes on 2 cores at most reach 2 x step / (step + loader per batch) = "
                  f"**{loading['two_process_ceiling']:.2f}x** of 1 process with 1 thread, whose loader worker already "
                  "uses the second core (gloo and the gathered contrastive losses come on top)."]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a demo data folder (python -m alta_hf.dataset_scripts.demo); "
                                                  "default: generate one into a temporary folder")
    parser.add_argument("--batch-size", type=int, help="per-device batch (default: configs/demo.yaml's, 32)")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per run, after the warm-up (the defaults fill the 23 steps of one "
                             "2-process epoch of the default demo data at batch 32)")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed steps at the start of a run")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of the three train.py runs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of part 2 (the demo's OMP_NUM_THREADS)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds before a train.py run is killed")
    parser.add_argument("--quick", action="store_true", help="smoke check: batch 8, 3 timed steps after 2 of warm-up")
    parser.add_argument("--output-json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.steps, args.warmup_steps = args.batch_size or 8, 3, 2
    args.batch_size = args.batch_size or yaml.safe_load(DEMO_CONFIG.read_text())["per_device_train_batch_size"]

    with tempfile.TemporaryDirectory(prefix="bench_training_") as temporary:
        work = Path(temporary)
        data = args.data
        if data is None:
            data = work / "demo_data"
            print(f"generating demo data into {data} ...", flush=True)
            # the evaluation splits are not used: one image each
            build_demo_data(data, DemoOptions(num_train_studies=300 if args.quick else 1500, num_validate_studies=1,
                                              num_eval_per_class=1))
        config = benchmark_config(work)
        load_before = os.getloadavg()
        print("part 1: train.py, 1 vs 2 processes", flush=True)
        processes = measure_processes(config, data, work, args)
        print("part 2: the step with and without data loading", flush=True)
        loading = measure_loading(config, data, work, args)
        load_after = os.getloadavg()

    results = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__, "quick": args.quick,
               "load_average_before": load_before[0], "load_average_after": load_after[0],
               "processes": processes, "loading": loading,
               "command": " ".join(["python", "-m", "benchmarks.bench_training_throughput", *(argv or sys.argv[1:])])}
    print(f"\n{results['cpu']}, {results['cores']} cores, torch {results['torch']}; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after\n")
    print(markdown(results))
    if args.output_json:
        args.output_json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
