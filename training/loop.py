"""The pre-training loop behind `train.py` (`accelerate launch train.py --config ...`), importable as `training.loop`.

`main` reads top to bottom: every epoch cuts its batches into groups of `gradient_accumulation_steps` micro-batches,
each group makes one optimizer update (`plain_step` or `cached_step`, then `optimizer_update` and `after_update`),
and a finished epoch ends with `end_epoch` (validation, best model, checkpoint); `finish` writes the model folder.

Step accounting, one rule for both paths: **an epoch's last partial group is dropped** (like the DataLoader's last
partial batch, `drop_last=True`), so every update sees exactly `gradient_accumulation_steps` micro-batches. An epoch
has `len(loader) // gradient_accumulation_steps` updates; the schedule, `total_updates`, the resume position
(`batches_in_epoch`, always a whole number of groups) and logging all count those.
"""

import contextlib
import itertools
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm

from alta_hf.evaluation.output_folder import ensure_writable_directory
from alta_hf.modeling_alta.losses_alta import clamp_logit_scales_
from alta_hf.training.arguments import arguments_to_dict, parse_arguments
from alta_hf.training.checkpointing import load_checkpoint, remove_incomplete_checkpoints, resolve_checkpoint, save_checkpoint
from alta_hf.training.data import SAMPLE_COUNTERS, StudyDataset, build_train_loader, load_pretraining_split
from alta_hf.training.grad_cache import cached_contrastive_step
from alta_hf.training.logging_utils import LOSS_NAMES, LossWindow, ProblemCounter, logit_scales, tracker_config
from alta_hf.training.model_setup import build_model_and_processor
from alta_hf.training.optimization import build_optimizer, build_scheduler, scaled_learning_rate
from alta_hf.training.runtime import all_finite, choose_mixed_precision, prefer_cpu
from alta_hf.training.validation import metric_name, run_validation, save_model_folder

__all__ = ["Run", "main", "micro_batch_groups", "updates_per_epoch"]

logger = get_logger(__name__)


@dataclass
class Run:
    """What the steps of one training run share: arguments, prepared objects and the resumable `state`."""

    model_args: object
    data_args: object
    training_args: object
    accelerator: Accelerator
    model: torch.nn.Module
    processor: object
    optimizer: object
    scheduler: object
    train_set: StudyDataset
    sampler: object
    loader: object
    state: dict
    updates_per_epoch: int
    total_updates: int
    dataset_meta: dict
    arguments: dict = field(default_factory=dict)
    window: LossWindow = field(default_factory=LossWindow)
    window_start: float = field(default_factory=time.perf_counter)
    progress: tqdm | None = None
    problems: ProblemCounter = field(init=False)
    validation_metric: str | None = field(init=False)

    def __post_init__(self):
        self.problems = ProblemCounter(self.state, self.data_args.max_skipped_fraction)
        # checked before the first step, not at the end of the first epoch
        task = self.data_args.validation_task
        self.validation_metric = metric_name(task, self.data_args.validation_metric) if task else None

    @property
    def logit_scale_max(self) -> float:
        return self.accelerator.unwrap_model(self.model).config.logit_scale_max

    @property
    def output_dir(self) -> Path:
        return Path(self.training_args.output_dir)

    @property
    def accumulation(self) -> int:
        return self.training_args.gradient_accumulation_steps


def updates_per_epoch(num_batches: int, accumulation: int) -> int:
    """Optimizer updates of one epoch of `num_batches` micro-batches: the last partial group is dropped."""
    return num_batches // accumulation


def micro_batch_groups(batches, size: int):
    """Consecutive groups of `size` batches; a shorter last group is yielded too (`epoch_groups` never asks for
    it)."""
    iterator = iter(batches)
    while group := list(itertools.islice(iterator, size)):
        yield group


# ----- start -----------------------------------------------------------------------------------------------------

def start_run(argv: list[str] | None) -> Run:
    """Parse the arguments, build the Accelerator, model, data, optimizer and schedule, and resume if asked to."""
    model_args, data_args, training_args = parse_arguments(argv)
    output_dir = ensure_writable_directory(training_args.output_dir)  # before any work, not at the first checkpoint
    cpu = prefer_cpu(training_args.use_cpu)
    # the loop groups micro-batches itself (see the module docstring): accelerate must not divide or skip syncs
    accelerator = Accelerator(
        gradient_accumulation_steps=1,
        mixed_precision=choose_mixed_precision(training_args.mixed_precision, cpu),
        log_with=None if training_args.report_to == "none" else training_args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        cpu=cpu,
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(training_args.seed)

    rows, image_root, dataset_meta = load_pretraining_split(data_args.train_dataset, data_args.train_split,
                                                            data_args.image_root)
    model, processor = build_model_and_processor(model_args, dataset_meta)
    accelerator.print(model.trainable_parameters_report())
    train_set = StudyDataset(rows, processor, image_root, training_args.seed)
    sampler, loader = build_train_loader(train_set, data_args, training_args)
    learning_rate = scaled_learning_rate(training_args, accelerator.num_processes)
    optimizer = build_optimizer(model, learning_rate, training_args)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    per_epoch = updates_per_epoch(len(loader), training_args.gradient_accumulation_steps)
    if per_epoch == 0:
        raise ValueError(f"{len(rows)} studies give no full optimizer step at batch "
                         f"{training_args.per_device_train_batch_size} x {training_args.gradient_accumulation_steps} "
                         f"x {accelerator.num_processes}")
    scheduler = accelerator.prepare(build_scheduler(optimizer, per_epoch, training_args, accelerator.num_processes))
    total_updates = training_args.num_train_epochs * per_epoch
    if training_args.max_train_steps is not None:
        total_updates = min(total_updates, training_args.max_train_steps)
    run = Run(model_args=model_args, data_args=data_args, training_args=training_args, accelerator=accelerator,
              model=model, processor=processor, optimizer=optimizer, scheduler=scheduler, train_set=train_set,
              sampler=sampler, loader=loader, updates_per_epoch=per_epoch, total_updates=total_updates,
              state=resume(accelerator, output_dir, training_args.resume_from_checkpoint), dataset_meta=dataset_meta,
              arguments=arguments_to_dict(model_args, data_args, training_args))
    accelerator.init_trackers("alta", config=tracker_config(run.arguments))
    logger.info(f"{len(rows)} studies, {per_epoch} updates per epoch, {total_updates} updates, learning rate "
                f"{learning_rate:.3g}, {accelerator.num_processes} process(es), mixed precision "
                f"{accelerator.mixed_precision}", main_process_only=True)
    run.progress = tqdm(total=total_updates, initial=run.state["global_step"], unit="step", desc="training",
                        disable=not accelerator.is_local_main_process)
    return run


def resume(accelerator, output_dir: Path, resume_from_checkpoint: str | None) -> dict:
    """The training state of the checkpoint to resume from (its weights and RNG states restored), or a fresh one."""
    state = {"global_step": 0, "epoch": 0, "batches_in_epoch": 0, "best_metric": None, "best_step": None,
             "consecutive_nonfinite": 0, **ProblemCounter.initial_state()}
    checkpoint = resolve_checkpoint(output_dir, resume_from_checkpoint, accelerator.num_processes)
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint)
        logger.info(f"resumed from {checkpoint} at step {state['global_step']} (epoch {state['epoch']}, "
                    f"batch {state['batches_in_epoch']})", main_process_only=True)
    if accelerator.is_main_process:
        remove_incomplete_checkpoints(output_dir)
    return state


# ----- one epoch -----------------------------------------------------------------------------------------------------

def epoch_groups(run: Run, epoch: int):
    """The epoch's remaining full groups of micro-batches, no more than the updates left to make."""
    run.model.train()
    for component in (run.train_set, run.sampler, run.loader):
        component.set_epoch(epoch)
    done = run.state["batches_in_epoch"]
    batches = run.accelerator.skip_first_batches(run.loader, done) if done else run.loader
    left = min(run.updates_per_epoch - done // run.accumulation, run.total_updates - run.state["global_step"])
    return itertools.islice(micro_batch_groups(batches, run.accumulation), max(left, 0))


def epoch_complete(run: Run) -> bool:
    return run.state["batches_in_epoch"] == run.updates_per_epoch * run.accumulation


def count_samples(run: Run, group: list[dict]) -> None:
    """Take the problem counters out of the batches and add them (over all processes) to the state."""
    for batch in group:
        counters = {name: batch.pop(name) for name in SAMPLE_COUNTERS}
        run.problems.add(run.accelerator, counters, len(batch["input_ids"]))
    run.state["batches_in_epoch"] += len(group)


def plain_step(run: Run, group: list[dict]) -> tuple[dict, bool]:
    """Accumulate the gradients of the group's micro-batches (DDP all-reduces on the last one only). Returns the
    losses averaged over the group and whether every micro-batch's loss was finite on every process."""
    accelerator, outputs, finite = run.accelerator, [], True
    for index, batch in enumerate(group):
        last = index == len(group) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(run.model):
            with accelerator.autocast():
                output = run.model(**batch)
            # every process takes the same decision, or the gradient all-reduce would hang
            finite = finite and all_finite(accelerator, output.loss)
            if finite:
                accelerator.backward(output.loss / len(group))
                outputs.append(output)
    losses = {name: torch.stack([getattr(output, name).detach() for output in outputs]).mean()
              for name in LOSS_NAMES if outputs and getattr(outputs[0], name) is not None}
    return losses, finite


def cached_step(run: Run, group: list[dict]) -> tuple[dict, bool]:
    """One large contrastive batch made of the group's micro-batches (training/grad_cache.py)."""
    losses = cached_contrastive_step(run.model, group, backward=run.accelerator.backward,
                                     no_sync=lambda: run.accelerator.no_sync(run.model))
    return losses, all_finite(run.accelerator, losses["loss"])


def optimizer_update(run: Run, finite: bool) -> None:
    """Clip and step; a non-finite update is skipped (the schedule moves on)."""
    if finite:
        if run.training_args.max_grad_norm:
            run.accelerator.clip_grad_norm_(run.model.parameters(), run.training_args.max_grad_norm)
        run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad()


def after_update(run: Run, losses: dict, finite: bool, num_samples: int) -> None:
    """Clamp the logit scales, count the update, log every `logging_steps` and checkpoint every
    `checkpointing_steps`."""
    state, training_args = run.state, run.training_args
    clamp_logit_scales_(run.accelerator.unwrap_model(run.model), run.logit_scale_max)
    state["global_step"] += 1
    run.progress.update(1)
    if finite:
        run.window.add(losses, num_samples)
    count_nonfinite(run, finite)
    if state["global_step"] % training_args.logging_steps == 0 or state["global_step"] == run.total_updates:
        log_window(run)
    saved = state["global_step"] % training_args.checkpointing_steps == 0
    if saved:
        save_checkpoint(run.accelerator, run.output_dir, state, training_args.checkpoints_total_limit)
    stop_if_too_many_skipped(run, saved)


def stop_if_too_many_skipped(run: Run, saved: bool) -> None:
    """The skip limit (`ProblemCounter`'s rule) stops the run only once the current step is in a checkpoint, so the
    finished updates survive and a resumed run (data fixed, or the threshold raised) goes on from there."""
    if not run.problems.exceeded():
        return
    if not saved:
        save_checkpoint(run.accelerator, run.output_dir, run.state, run.training_args.checkpoints_total_limit)
    run.problems.check()


def count_nonfinite(run: Run, finite: bool) -> None:
    state = run.state
    if finite:
        state["consecutive_nonfinite"] = 0
        return
    state["consecutive_nonfinite"] += 1
    state["nonfinite_steps"] += 1
    logger.warning(f"step {state['global_step']}: non-finite loss, update skipped", main_process_only=True)
    if state["consecutive_nonfinite"] >= run.training_args.max_consecutive_nonfinite:
        raise RuntimeError(f"{state['consecutive_nonfinite']} optimizer steps in a row had a non-finite loss; lower "
                           "the learning rate or check the data")


def log_window(run: Run) -> None:
    """Log the losses averaged since the last log (over processes), the learning rate, throughput and counters."""
    accelerator = run.accelerator
    elapsed = time.perf_counter() - run.window_start
    values = run.window.reduce(accelerator)
    values.update({
        "train/lr": run.scheduler.get_last_lr()[0],
        "train/samples_per_second": run.window.samples(accelerator) / max(elapsed, 1e-9),
        **logit_scales(accelerator.unwrap_model(run.model)),
        **run.problems.log_values(),
    })
    accelerator.log(values, step=run.state["global_step"])
    run.progress.set_postfix(loss=f"{values.get('train/loss', float('nan')):.3f}")
    run.window, run.window_start = LossWindow(), time.perf_counter()


def end_epoch(run: Run, epoch: int) -> None:
    """Validation (keeping the best model) and a checkpoint at the start of the next epoch."""
    run.state["epoch"], run.state["batches_in_epoch"] = epoch + 1, 0
    validate(run, epoch)
    save_checkpoint(run.accelerator, run.output_dir, run.state, run.training_args.checkpoints_total_limit)
    stop_if_too_many_skipped(run, saved=True)


def validate(run: Run, epoch: int) -> None:
    accelerator, state = run.accelerator, run.state
    metrics = run_validation(accelerator, run.model, run.processor, run.data_args)
    if metrics is None:
        return
    name = run.validation_metric
    value = metrics[name]
    accelerator.log({f"validation/{key}": metric for key, metric in metrics.items()
                     if isinstance(metric, (int, float))}, step=state["global_step"])
    logger.info(f"epoch {epoch + 1}: validation {name} = {value:.4f}", main_process_only=True)
    if state["best_metric"] is None or value > state["best_metric"]:
        state["best_metric"], state["best_step"] = value, state["global_step"]
        if accelerator.is_main_process:
            save_model_folder(accelerator.unwrap_model(run.model), run.processor, run.output_dir / "best_model",
                              {**run.arguments, "best_metric": {name: value}, "global_step": state["global_step"]})


# ----- the result ----------------------------------------------------------------------------------------------------

def finish(run: Run) -> Path:
    """Write `output_dir/model` (the best validated model, or the last one) and push it if asked to."""
    run.progress.close()
    accelerator, state, output_dir = run.accelerator, run.state, run.output_dir
    final_dir = output_dir / "model"
    if accelerator.is_main_process:
        best_dir = output_dir / "best_model"
        if state["best_step"] is not None and best_dir.is_dir():
            temporary = output_dir / ".tmp-model"
            shutil.rmtree(temporary, ignore_errors=True)
            shutil.copytree(best_dir, temporary)
            shutil.rmtree(final_dir, ignore_errors=True)
            temporary.rename(final_dir)
            logger.info(f"model saved to {final_dir} (best {run.validation_metric} {state['best_metric']:.4f} at "
                        f"step {state['best_step']})", main_process_only=True)
        else:
            save_model_folder(accelerator.unwrap_model(run.model), run.processor, final_dir,
                              {**run.arguments, "global_step": state["global_step"]})
            logger.info(f"model saved to {final_dir}", main_process_only=True)
        if run.training_args.push_to_hub:
            push(run, final_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final_dir


def push(run: Run, final_dir: Path) -> None:
    from alta_hf.evaluation.hub import push_folder_to_hub

    training_args, logs = run.training_args, run.output_dir / "logs"
    trainable, total = run.accelerator.unwrap_model(run.model).trainable_parameter_counts()
    push_folder_to_hub(
        final_dir, training_args.hub_model_id, token=training_args.hub_token, private=training_args.hub_private,
        training_args=run.arguments, training_logs=logs if logs.is_dir() else None,
        card_kwargs={"parameter_counts": {"total": total, "trainable": trainable},
                     "training_data": "demo" if run.dataset_meta.get("generator") else "mimic"},
    )


# ----- the loop --------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> Path:
    """Train as `argv` (or the command line) says; returns the saved model folder."""
    run = start_run(argv)
    step = cached_step if run.training_args.cached_contrastive_accumulation else plain_step
    for epoch in range(run.state["epoch"], run.training_args.num_train_epochs):
        for group in epoch_groups(run, epoch):
            count_samples(run, group)
            losses, finite = step(run, group)
            optimizer_update(run, finite)
            after_update(run, losses, finite, sum(len(batch["input_ids"]) for batch in group))
        if not epoch_complete(run):  # max_train_steps reached inside the epoch
            break
        end_epoch(run, epoch)
    return finish(run)


if __name__ == "__main__":
    main()
