"""Fine-tune, or probe linearly, a trained ALTA on a labelled set (MRM's protocol: 1 %, 10 % or 100 % of the labels).

    python -m alta_hf.training.finetune --model ALTA_DIR --dataset LABELLED_SET --output-dir OUT
        [--mode linear_probe|adapters|full] [--label_fraction 0.01|0.1|1.0] [--seed 0] [--num-train-epochs 10]
        [--batch-size 32] [--learning-rate LR] [--patience 3] [--bf16]

`ALTA_DIR` is any saved ALTA folder (AltaModel or AltaForPreTraining, with its processor); `LABELLED_SET` a folder
written by `dataset_scripts.chexpert_classification`, `nih_chestxray14` or `rsna_classification` (or any folder of
the same layout, docs/downstream.md). Training is the transformers `Trainer`: one evaluation per epoch on the
validation split, the best epoch by validation AUROC kept, early stopping after `--patience` epochs without
improvement. OUT gets the classifier (`AutoModelForImageClassification`, `pipeline("image-classification")` with
`trust_remote_code=True`), the processor, and `finetune_results.json` (validation and test AUROC, per class too).
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

__all__ = ["DEFAULT_LEARNING_RATES", "main"]

logger = logging.getLogger("alta_hf.training.finetune")

# Linear probes take large steps (a convex problem on frozen features); the adapters ALTA's pre-training rate; the
# whole tower a small one.
DEFAULT_LEARNING_RATES = {"linear_probe": 1e-2, "adapters": 1e-3, "full": 1e-4}
RESULTS_FILE = "finetune_results.json"


def _parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m alta_hf.training.finetune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="saved ALTA folder (AltaModel or AltaForPreTraining) or Hub id")
    parser.add_argument("--dataset", required=True, help="labelled set folder (dataset_scripts/labelled_sets.py)")
    parser.add_argument("--output-dir", required=True, help="where the classifier folder is written")
    parser.add_argument("--mode", choices=["linear_probe", "adapters", "full"], default="linear_probe")
    parser.add_argument("--label_fraction", "--label-fraction", type=float, default=1.0,
                        help="seeded, class-stratified fraction of the training labels (0.01, 0.1, 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the label fraction, the head and the data order")
    parser.add_argument("--num-train-epochs", type=float, default=10)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (overrides epochs)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=None, help="default by mode: %s" % DEFAULT_LEARNING_RATES)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument("--patience", type=int, default=3, help="epochs without a better validation AUROC before stopping")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers decoding images")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU, or CPU with bf16 support)")
    parser.add_argument("--use-cpu", action="store_true", help="train on the CPU even when a GPU is present")
    args = parser.parse_args(argv)
    if not 0 < args.label_fraction <= 1:
        parser.error(f"--label_fraction must be in (0, 1], got {args.label_fraction}")
    return args


def _training_arguments(args, checkpoints: Path):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=args.learning_rate or DEFAULT_LEARNING_RATES[args.mode],
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="auroc",
        greater_is_better=True,
        save_total_limit=2,
        seed=args.seed,
        data_seed=args.seed,
        bf16=args.bf16,
        use_cpu=args.use_cpu,
        dataloader_num_workers=args.num_workers,
        remove_unused_columns=False,  # the collator reads image_path
        label_names=["labels"],
        report_to=[],
        disable_tqdm=not sys.stderr.isatty(),
    )


def _build_model(args, labelled):
    from alta_hf.modeling_alta import AltaForImageClassification

    return AltaForImageClassification.from_pretrained(
        args.model,
        num_labels=len(labelled.class_names),
        id2label=dict(enumerate(labelled.class_names)),
        label2id={name: i for i, name in enumerate(labelled.class_names)},
        problem_type=labelled.problem_type,
        classification_mode=args.mode,
    )


def main(argv=None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch
    from transformers import EarlyStoppingCallback, Trainer, set_seed

    from alta_hf.evaluation.loading import resolve_model_dir
    from alta_hf.processing import load_processor  # the package's own classes: saved again, they keep their auto_map
    from alta_hf.training.finetune_data import ImageLabelCollator, auroc_metrics, label_fraction_indices, load_labelled_set

    labelled = load_labelled_set(args.dataset)
    model_dir = resolve_model_dir(args.model)
    args.model = str(model_dir)
    chosen = label_fraction_indices(labelled.label_matrix("train"), args.label_fraction, args.seed)
    train = labelled.splits["train"].select(chosen)
    logger.info("training on %d of %d labelled images (label fraction %g, seed %d)",
                len(train), len(labelled.splits["train"]), args.label_fraction, args.seed)

    set_seed(args.seed)  # the fresh head's initialisation
    model = _build_model(args, labelled)
    trainable, total = model.trainable_parameter_counts()
    logger.info("mode %s: %s", args.mode, model.trainable_parameters_report())
    processor = load_processor(model_dir)
    collator = ImageLabelCollator(processor.image_processor, labelled.image_root, labelled.label_column, labelled.problem_type)

    def compute_metrics(prediction):
        return auroc_metrics(prediction.predictions, prediction.label_ids, labelled.class_names, labelled.problem_type)

    output = Path(args.output_dir)
    trainer = Trainer(
        model=model,
        args=_training_arguments(args, output / "checkpoints"),
        train_dataset=train,
        eval_dataset=labelled.splits["validation"],
        data_collator=collator,
        compute_metrics=compute_metrics,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=args.patience)],
    )
    train_result = trainer.train()
    trainer.remove_callback(EarlyStoppingCallback)  # it would warn about the test metrics' names
    validation = trainer.evaluate(metric_key_prefix="validation")  # the best epoch, reloaded at the end
    test = trainer.evaluate(labelled.splits["test"], metric_key_prefix="test") if "test" in labelled.splits else {}

    trainer.save_model(str(output))
    processor.save_pretrained(str(output))
    results = {
        "model": args.model, "dataset": str(Path(args.dataset).absolute()), "mode": args.mode,
        "label_fraction": args.label_fraction, "seed": args.seed, "train_images": len(train),
        "trainable_parameters": trainable, "total_parameters": total,
        "epochs_run": train_result.metrics.get("epoch"), "best_checkpoint": trainer.state.best_model_checkpoint,
        "validation": {k.removeprefix("validation_"): v for k, v in validation.items()},
        "test": {k.removeprefix("test_"): v for k, v in test.items()},
        "unreadable_images_skipped_in_main_process": collator.skipped,
        "device": str(trainer.args.device), "torch": torch.__version__,
    }
    temporary = output / f".{RESULTS_FILE}.tmp{os.getpid()}"
    temporary.write_text(json.dumps(results, indent=2) + "\n")
    temporary.replace(output / RESULTS_FILE)
    print(f"validation AUROC {results['validation'].get('auroc', float('nan')):.4f}"
          + (f"  test AUROC {results['test']['auroc']:.4f}" if "auroc" in results["test"] else "")
          + f"  -> {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
