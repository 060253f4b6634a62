"""What train.py's loop adds to the bare optimizer step, side by side in one process on the demo geometry.

    python -m benchmarks.bench_loop_overhead --data /tmp/demo_data [--steps 5] [--rounds 3] [--policies all alta]

Per `--trainable_policy`, one `training.loop.start_run` of configs/demo.yaml (no validation, no checkpoint inside the
run, `--logging_steps 1` to TensorBoard as benchmarks/bench_training_throughput.py part 1 runs it) builds the model,
optimizer, schedule and DataLoader. Three kinds of steps then alternate, `--steps` of each per round, on the same
model:

- bare: `model(**batch).loss.backward()`, clipping, AdamW, zero_grad, logit-scale clamp (bench_training_throughput.py
  part 2), on batches kept in memory;
- loop: training/loop.py's `plain_step` + `optimizer_update` + `after_update` (finite checks, loss window, logging,
  progress bar) on the same batches;
- loop + loader: the same, each group pulled from the DataLoader (`epoch_groups`), as train.py runs.

Medians over rounds of the mean wall and CPU seconds per step (CPU: this process's threads, not the loader worker;
on a shared machine CPU time is the steadier figure); the ratios are to the bare step of the same round.
"""

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the demo's setting (training/demo.py); before torch is imported

import torch  # noqa: E402
import yaml  # noqa: E402
from accelerate.state import AcceleratorState  # noqa: E402

from benchmarks.bench_dataset_mimic import cpu_name  # noqa: E402
from benchmarks.bench_training_throughput import benchmark_config  # noqa: E402
from alta_hf.modeling_alta.losses_alta import clamp_logit_scales_  # noqa: E402
from alta_hf.training import loop  # noqa: E402
from alta_hf.training.data import SAMPLE_COUNTERS  # noqa: E402

KINDS = ("bare", "loop", "loop + loader")


def bare_step(run, batch) -> None:
    run.model(**batch).loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.training_args.max_grad_norm)
    run.optimizer.step()
    run.optimizer.zero_grad()
    clamp_logit_scales_(run.model, run.logit_scale_max)


def loop_step(run, group) -> None:
    losses, finite = loop.plain_step(run, group)
    loop.optimizer_update(run, finite)
    loop.after_update(run, losses, finite, sum(len(batch["input_ids"]) for batch in group))


def measure_policy(policy: str, config: Path, data: Path, work: Path, args) -> dict:
    AcceleratorState._reset_state(reset_partial_state=True)
    arguments = ["--config", str(config), "--train_dataset", str(data / "pretrain"),
                 "--output_dir", str(work / policy), "--trainable_policy", policy, "--logging_steps", "1",
                 "--report_to", "tensorboard", "--max_train_steps", str(10**6)]
    run = loop.start_run(arguments)
    run.model.train()
    kept = []
    for batch in itertools.islice(run.loader, args.steps):
        for name in SAMPLE_COUNTERS:
            batch.pop(name)
        kept.append(batch)
    groups = loop.epoch_groups(run, epoch=1)

    def from_loader():
        group = next(groups)
        loop.count_samples(run, group)
        loop_step(run, group)

    kinds = {"bare": lambda index: bare_step(run, kept[index]), "loop": lambda index: loop_step(run, [kept[index]]),
             "loop + loader": lambda index: from_loader()}
    for kind in kinds.values():  # warm-up
        kind(0)
    seconds, cpu_seconds = {kind: [] for kind in KINDS}, {kind: [] for kind in KINDS}
    for _ in range(args.rounds):
        for kind, step in kinds.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            for index in range(args.steps):
                step(index)
            seconds[kind].append((time.perf_counter() - start) / args.steps)
            cpu_seconds[kind].append((time.process_time() - cpu_start) / args.steps)
    trainable, total = run.model.trainable_parameter_counts()
    run.progress.close()
    run.accelerator.end_training()
    def summary(values: dict) -> dict:
        return {"per_step": {kind: statistics.median(series) for kind, series in values.items()},
                "ratios": {kind: statistics.median(value / bare for value, bare in zip(values[kind], values["bare"]))
                           for kind in KINDS}}

    return {"policy": policy, "trainable_parameters": trainable, "parameters": total, "wall": summary(seconds),
            "cpu": summary(cpu_seconds)}


def markdown(results: list[dict], batch: int) -> str:
    lines = [f"| policy (trainable / all parameters) | seconds | {' | '.join(f'{kind}, s/step' for kind in KINDS)} | "
             "loop / bare | loop + loader / bare |", "|---|---|" + "---:|" * (len(KINDS) + 2)]
    for result in results:
        for clock in ("wall", "cpu"):
            seconds, ratios = result[clock]["per_step"], result[clock]["ratios"]
            lines.append(f"| {result['policy']} ({result['trainable_parameters']:,} / {result['parameters']:,}) | "
                         f"{clock} | " + " | ".join(f"{seconds[kind]:.3f}" for kind in KINDS)
                         + f" | {ratios['loop']:.2f}x | {ratios['loop + loader']:.2f}x |")
    return "\n".join(lines) + f"\n\nconfigs/demo.yaml, batch {batch}, one process"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a demo data folder (python -m alta_hf.dataset_scripts.demo)")
    parser.add_argument("--steps", type=int, default=5, help="steps of each kind per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--policies", nargs="+", default=["all", "alta"])
    parser.add_argument("--output-json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_loop_") as temporary:
        work = Path(temporary)
        config = benchmark_config(work)
        batch = yaml.safe_load(config.read_text())["per_device_train_batch_size"]
        results = [measure_policy(policy, config, args.data, work, args) for policy in args.policies]
    summary = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "load_average_before": load_before, "load_average_after": os.getloadavg()[0], "results": results}
    print(json.dumps(summary, indent=2))
    print(markdown(results, batch))
    if args.output_json:
        args.output_json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
