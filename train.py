#!/usr/bin/env python
"""Pre-train ALTA with Accelerate: one CPU, one GPU, many GPUs or many nodes, unchanged.

    accelerate launch train.py --config configs/alta_base_mimic.yaml
    accelerate launch --config_file configs/accelerate/multi_gpu_8.yaml train.py --config configs/alta_base_mimic.yaml
    python train.py --config configs/demo.yaml --num_train_epochs 2        # a single process needs no launcher

Two CPU processes (gloo): `ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 --num_machines 1
--mixed_precision no --dynamo_backend no train.py --config configs/demo.yaml`.
"""

import logging
import shutil
import time
from pathlib import Path

from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm

from modeling_alta.losses_alta import clamp_logit_scales_
from training.arguments import arguments_to_dict, parse_arguments
from training.checkpointing import load_checkpoint, remove_incomplete_checkpoints, resolve_checkpoint, save_checkpoint
from training.data import SAMPLE_COUNTERS, StudyDataset, build_train_loader, load_pretraining_split
from training.grad_cache import cached_contrastive_step
from training.logging_utils import LossWindow, ProblemCounter, logit_scales, tracker_config
from training.model_setup import build_model_and_processor
from training.optimization import build_optimizer, build_scheduler, scaled_learning_rate
from training.runtime import all_finite, choose_mixed_precision, crash_here_for_tests, prefer_cpu
from training.validation import metric_name, run_validation, save_model_folder

logger = get_logger(__name__)


def main(argv: list[str] | None = None) -> Path:
    model_args, data_args, training_args = parse_arguments(argv)
    output_dir = Path(training_args.output_dir)
    arguments = arguments_to_dict(model_args, data_args, training_args)
    cpu = prefer_cpu(training_args.use_cpu)
    accumulation = training_args.gradient_accumulation_steps
    # cached accumulation makes one optimizer step of `accumulation` micro-batches itself (training/grad_cache.py)
    cached = training_args.cached_contrastive_accumulation
    accelerator = Accelerator(
        gradient_accumulation_steps=1 if cached else accumulation,
        mixed_precision=choose_mixed_precision(training_args.mixed_precision, cpu),
        log_with=None if training_args.report_to == "none" else training_args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        cpu=cpu,
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(training_args.seed)

    # ----- model, processor, data -----------------------------------------------------------------------------
    rows, image_root, dataset_meta = load_pretraining_split(data_args.train_dataset, data_args.train_split,
                                                            data_args.image_root)
    model, processor = build_model_and_processor(model_args, dataset_meta)
    accelerator.print(model.trainable_parameters_report())
    train_set = StudyDataset(rows, processor, image_root, training_args.seed)
    sampler, loader = build_train_loader(train_set, data_args, training_args)
    learning_rate = scaled_learning_rate(training_args, accelerator.num_processes)
    optimizer = build_optimizer(model, learning_rate, training_args)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    updates_per_epoch = len(loader) // accumulation
    if updates_per_epoch == 0:
        raise ValueError(f"{len(rows)} studies give no full optimizer step at batch "
                         f"{training_args.per_device_train_batch_size} x {accumulation} x {accelerator.num_processes}")
    scheduler = accelerator.prepare(build_scheduler(optimizer, updates_per_epoch, training_args,
                                                    accelerator.num_processes))
    total_updates = training_args.num_train_epochs * updates_per_epoch
    if training_args.max_train_steps is not None:
        total_updates = min(total_updates, training_args.max_train_steps)
    logit_scale_max = accelerator.unwrap_model(model).config.logit_scale_max

    # ----- resume ------------------------------------------------------------------------------------------------
    state = {"global_step": 0, "epoch": 0, "batches_in_epoch": 0, "best_metric": None, "best_step": None,
             "consecutive_nonfinite": 0, **ProblemCounter.initial_state()}
    checkpoint = resolve_checkpoint(output_dir, training_args.resume_from_checkpoint)
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint)
        logger.info(f"resumed from {checkpoint} at step {state['global_step']} (epoch {state['epoch']}, "
                    f"batch {state['batches_in_epoch']})", main_process_only=True)
    if accelerator.is_main_process:
        remove_incomplete_checkpoints(output_dir)
    problems = ProblemCounter(state, data_args.max_skipped_fraction)
    validation_metric = metric_name(data_args.validation_task, data_args.validation_metric) \
        if data_args.validation_task else None

    accelerator.init_trackers("alta", config=tracker_config(arguments))
    logger.info(f"{len(rows)} studies, {updates_per_epoch} updates per epoch, {total_updates} updates, "
                f"learning rate {learning_rate:.3g}, {accelerator.num_processes} process(es), "
                f"mixed precision {accelerator.mixed_precision}", main_process_only=True)
    progress = tqdm(total=total_updates, initial=state["global_step"], disable=not accelerator.is_local_main_process,
                    desc="training", unit="step")
    window = LossWindow()
    update_is_finite = True
    window_start = time.perf_counter()

    def optimizer_update(finite: bool) -> None:
        """Clip and step (outside `accumulate`, or on its last micro-batch; a non-finite update is skipped)."""
        if finite:
            if accelerator.sync_gradients and training_args.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), training_args.max_grad_norm)
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad()

    # ----- the loop ----------------------------------------------------------------------------------------------
    for epoch in range(state["epoch"], training_args.num_train_epochs):
        if state["global_step"] >= total_updates:
            break
        model.train()
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, state["batches_in_epoch"]) if state["batches_in_epoch"] \
            else loader
        pending = []  # micro-batches of the current cached-accumulation step
        for batch in batches:
            counters = {name: batch.pop(name) for name in SAMPLE_COUNTERS}
            state["batches_in_epoch"] += 1
            problems.add(accelerator, counters, len(batch["input_ids"]))
            if cached:
                pending.append(batch)
                if len(pending) < accumulation:
                    continue
                losses = cached_contrastive_step(model, pending, backward=accelerator.backward,
                                                 no_sync=lambda: accelerator.no_sync(model))
                num_samples = sum(len(micro_batch["input_ids"]) for micro_batch in pending)
                pending = []
                update_is_finite = all_finite(accelerator, losses["loss"])
                if update_is_finite:
                    window.add(losses, num_samples)
                optimizer_update(update_is_finite)
            else:
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        outputs = model(**batch)
                    # every process takes the same decision, or the gradient all-reduce would hang
                    finite = all_finite(accelerator, outputs.loss)
                    if finite:
                        accelerator.backward(outputs.loss)
                        window.add(outputs, len(batch["input_ids"]))
                    update_is_finite &= finite
                    optimizer_update(update_is_finite)
                if not accelerator.sync_gradients:
                    continue

            # one optimizer update done (or skipped for a non-finite loss)
            clamp_logit_scales_(accelerator.unwrap_model(model), logit_scale_max)
            state["global_step"] += 1
            progress.update(1)
            if update_is_finite:
                state["consecutive_nonfinite"] = 0
            else:
                state["consecutive_nonfinite"] += 1
                state["nonfinite_steps"] += 1
                logger.warning(f"step {state['global_step']}: non-finite loss, update skipped", main_process_only=True)
                if state["consecutive_nonfinite"] >= training_args.max_consecutive_nonfinite:
                    raise RuntimeError(f"{state['consecutive_nonfinite']} optimizer steps in a row had a non-finite "
                                       "loss; lower the learning rate or check the data")
            update_is_finite = True
            if state["global_step"] % training_args.logging_steps == 0 or state["global_step"] == total_updates:
                elapsed = time.perf_counter() - window_start
                values = window.reduce(accelerator)
                values.update({
                    "train/lr": scheduler.get_last_lr()[0],
                    "train/samples_per_second": window.samples(accelerator) / max(elapsed, 1e-9),
                    **logit_scales(accelerator.unwrap_model(model)),
                    **problems.log_values(),
                })
                accelerator.log(values, step=state["global_step"])
                progress.set_postfix(loss=f"{values.get('train/loss', float('nan')):.3f}")
                window, window_start = LossWindow(), time.perf_counter()
                problems.check()
            if state["global_step"] % training_args.checkpointing_steps == 0:
                save_checkpoint(accelerator, output_dir, state, training_args.checkpoints_total_limit)
            crash_here_for_tests(state["global_step"])
            if state["global_step"] >= total_updates:
                break
        else:  # the epoch ran to its end
            state["epoch"], state["batches_in_epoch"] = epoch + 1, 0
            problems.check()
            metrics = run_validation(accelerator, model, processor, data_args)
            if metrics is not None:
                value = metrics[validation_metric]
                accelerator.log({f"validation/{name}": metric for name, metric in metrics.items()
                                 if isinstance(metric, (int, float))}, step=state["global_step"])
                logger.info(f"epoch {epoch + 1}: validation {validation_metric} = {value:.4f}", main_process_only=True)
                if state["best_metric"] is None or value > state["best_metric"]:
                    state["best_metric"], state["best_step"] = value, state["global_step"]
                    if accelerator.is_main_process:
                        save_model_folder(accelerator.unwrap_model(model), processor, output_dir / "best_model",
                                          {**arguments, "best_metric": {validation_metric: value},
                                           "global_step": state["global_step"]})
            save_checkpoint(accelerator, output_dir, state, training_args.checkpoints_total_limit)

    # ----- the result --------------------------------------------------------------------------------------------
    progress.close()
    final_dir = output_dir / "model"
    if accelerator.is_main_process:
        best_dir = output_dir / "best_model"
        if state["best_step"] is not None and best_dir.is_dir():
            temporary = output_dir / ".tmp-model"
            shutil.rmtree(temporary, ignore_errors=True)
            shutil.copytree(best_dir, temporary)
            shutil.rmtree(final_dir, ignore_errors=True)
            temporary.rename(final_dir)
        else:
            save_model_folder(accelerator.unwrap_model(model), processor, final_dir,
                              {**arguments, "global_step": state["global_step"]})
        logger.info(f"model saved to {final_dir}" + (f" (best {validation_metric} {state['best_metric']:.4f} at step "
                    f"{state['best_step']})" if state["best_step"] is not None else ""), main_process_only=True)
        if training_args.push_to_hub:
            from evaluation.hub import push_folder_to_hub

            trainable, total = accelerator.unwrap_model(model).trainable_parameter_counts()
            push_folder_to_hub(
                final_dir, training_args.hub_model_id, token=training_args.hub_token, private=training_args.hub_private,
                training_args=arguments,
                training_logs=output_dir / "logs" if (output_dir / "logs").is_dir() else None,
                card_kwargs={"parameter_counts": {"total": total, "trainable": trainable},
                             "training_data": "demo" if dataset_meta.get("generator") else "mimic"},
            )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final_dir


if __name__ == "__main__":
    main()
