"""The one-command demo: ALTA's recipe on pretrained demo towers, on 2 CPU cores; the study beside it.

    python -m alta_hf.training.demo                      # = make demo
    python -m alta_hf.training.demo --study              # the adapter study (training/demo_study.py)

Two stages, as the real pipeline:
1. the demo towers, made once and shipped in `demo_towers/` (`python -m alta_hf.training.pretrain_demo_towers`): an image
   tower pre-trained by masked record modelling (MAE + image-conditioned report MLM, as MRM) and a text tower by
   MLM, on the demo training split only, written as an `MRM.pth` and a CXR-BERT-like folder;
2. ALTA: `train.py --init_from_mrm demo_towers/MRM.pth --init_from_cxr_bert demo_towers/cxr-bert-demo` converts them
   with `convert_pretrained_towers` as for the real towers, freezes them (`--trainable_policy alta`: adapters, norms
   and heads train), masks 75 % of the patches, feeds the current and prior frontal and lateral views, and trains
   the four losses (configs/demo.yaml).

The demo then evaluates on the demo test split (zero-shot accuracy, retrieval precision) and runs ALTA's checks
(training/demo_checks.py): reconstruction loss on held-out masked images before and after ALTA, temporal consistency
(current vs prior embeddings of the same patient) and the trainable share. Everything lands in
`outputs/demo/demo_summary.json`; the model folder (`outputs/demo/model`) loads with
`AutoModel.from_pretrained(..., trust_remote_code=True)` and `AutoProcessor`.
"""

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

__all__ = ["main"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
DEMO_TOWERS = REPO_ROOT / "demo_towers"
# The demo towers' geometry without the training augmentation: the demo data has no pose or exposure variation, and
# the official recipe's random affine (20 degrees, 10 % shifts, shear) would be the main thing a small frozen tower's
# features vary with, drowning the findings (benchmarks/RESULTS.md, "Why the demo does not learn").
DEMO_PROCESSOR = REPO_ROOT / "configs" / "processor" / "demo_unaugmented.json"
_DATA_PARTS = ("pretrain", "eval", "tokenizer")
# the generator options of the study's variant without prior and lateral views
FRONTAL_ONLY = ["--prior-fraction", "0", "--lateral-fraction", "0"]


def _limit_threads() -> None:
    # Two cores: the training process and its loader worker each get one thread; oversubscribed BLAS threads made
    # steps 4-6x slower when measured on the 2-core CI machine. Must run before torch is imported.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")


def _ensure_demo_data(data_dir: Path, num_train_studies: int | None, generator_args: list[str]) -> None:
    if all((data_dir / part).is_dir() for part in _DATA_PARTS):
        print(f"demo data: reusing {data_dir}")
        return
    from alta_hf.dataset_scripts.demo import main as generate_demo_data

    arguments = ["--output-dir", str(data_dir), "--overwrite", *generator_args]
    if num_train_studies is not None:
        arguments += ["--num-train-studies", str(num_train_studies)]
    print(f"demo data: generating {data_dir} (about a minute)")
    if generate_demo_data(arguments) != 0:
        raise SystemExit(f"demo data generation into {data_dir} failed")


def _parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None,
                        help="demo data folder, generated when absent (default demo_data, demo_data_frontal_only "
                             "with --frontal-only)")
    parser.add_argument("--output-dir", default="outputs/demo", help="training run folder")
    parser.add_argument("--towers", default=str(DEMO_TOWERS), help="folder with MRM.pth and cxr-bert-demo/")
    parser.add_argument("--num-train-epochs", type=int, default=None, help="override configs/demo.yaml")
    parser.add_argument("--num-train-studies", type=int, default=None, help="studies to generate (default 1500)")
    parser.add_argument("--frontal-only", action="store_true",
                        help="demo data without prior and lateral views (the study's ablation)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last checkpoint")
    parser.add_argument("--train-arg", action="append", default=[], metavar="ARG",
                        help="extra train.py argument, repeatable (e.g. --train-arg=--adapter_type=lora)")
    parser.add_argument("--study", action="store_true", help="run the adapter study instead (training/demo_study.py)")
    return parser.parse_args(argv)


def _peak_memory_mib() -> float:
    """Peak resident memory of this process and of its largest finished child (loader workers), MiB (Linux)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round((own + children) / 1024, 1)


def _checks(model_dir: Path, towers: Path, pretrain_dir: Path) -> dict:
    from alta_hf.modeling_alta import AltaForPreTraining
    from alta_hf.modeling_alta.convert_pretrained_towers import build_from_pretrained_towers
    from alta_hf.processing import load_processor
    from alta_hf.training.demo_checks import (
        held_out_studies, reconstruction_loss_on_held_out, temporal_consistency_auroc, trainable_breakdown,
    )

    processor = load_processor(model_dir)
    before, _ = build_from_pretrained_towers(towers / "MRM.pth", towers / "cxr-bert-demo")
    after = AltaForPreTraining.from_pretrained(model_dir)
    args = json.loads((model_dir / "training_args.json").read_text())
    from alta_hf.training.model_setup import set_trainable_policy

    set_trainable_policy(after, args["trainable_policy"])
    studies, image_root = held_out_studies(pretrain_dir)
    return {
        "reconstruction_loss": {
            "held_out_studies": len(studies),
            "before_alta": round(reconstruction_loss_on_held_out(before, processor, studies, image_root), 4),
            "after_alta": round(reconstruction_loss_on_held_out(after, processor, studies, image_root), 4),
        },
        "temporal_consistency": {
            "before_alta": temporal_consistency_auroc(before.alta, processor, studies, image_root),
            "after_alta": temporal_consistency_auroc(after.alta, processor, studies, image_root),
        } if any(row.get("prior_frontal_path") for row in studies) else None,  # data without priors (--frontal-only)
        "trainable": trainable_breakdown(after),
    }


def _print_summary(summary: dict, table: str, output_dir: Path) -> None:
    checks, metrics = summary["checks"], summary["metrics"]
    trainable = checks["trainable"]
    print()
    print(table)
    print()
    print(f"zero-shot accuracy {metrics['zero_shot/accuracy']:.3f}   image->report P@5 "
          f"{metrics['image_to_text/precision_at_5']:.3f}   report->image P@5 "
          f"{metrics['text_to_image/precision_at_5']:.3f}   (demo test split)")
    print(f"trainable: {trainable['trainable']:,} of {trainable['total']:,} parameters ({100 * trainable['share']:.2f} %)"
          f", trainable policy {summary['trainable_policy']}")
    for kind, count in trainable["by_kind"].items():
        print(f"  {kind:<58} {count:>9,}  ({100 * count / trainable['total']:.2f} %)")
    reconstruction = checks["reconstruction_loss"]
    print(f"reconstruction loss, {reconstruction['held_out_studies']} held-out studies, 75 % masked: "
          f"{reconstruction['before_alta']:.4f} before ALTA, {reconstruction['after_alta']:.4f} after")
    temporal = checks["temporal_consistency"]
    if temporal is None:
        print("temporal consistency: not measured (the held-out studies have no priors)")
    else:
        print(f"temporal consistency AUROC (same patient's current vs prior frontal, {temporal['after_alta']['pairs']} "
              f"pairs): {temporal['before_alta']['auroc']:.3f} before ALTA, {temporal['after_alta']['auroc']:.3f} after")
    print(f"model folder: {summary['model_dir']}  (AutoModel/AutoProcessor.from_pretrained(..., trust_remote_code=True))")
    print(f"evaluation:   {output_dir / 'evaluation'}   logs: {output_dir / 'logs'} (tensorboard --logdir)")
    seconds = summary["seconds"]
    print(f"time:         {seconds['training']:.0f} s training, {seconds['total']:.0f} s in all; peak memory "
          f"{summary['peak_memory_mib']:.0f} MiB")


def main(argv=None) -> dict:
    args = _parse(argv)
    if args.study:
        from alta_hf.training.demo_study import main as run_study

        return run_study([])
    _limit_threads()
    data_dir = Path(args.data_dir or ("demo_data_frontal_only" if args.frontal_only else "demo_data"))
    output_dir, towers = Path(args.output_dir), Path(args.towers)
    start = time.perf_counter()
    _ensure_demo_data(data_dir, args.num_train_studies, FRONTAL_ONLY if args.frontal_only else [])
    data_ready = time.perf_counter()

    import alta_hf.training.loop as train
    from alta_hf.evaluation import format_table, run_task
    from alta_hf.modeling_alta import AltaModel
    from alta_hf.processing import load_processor

    train_arguments = ["--config", str(DEMO_CONFIG), "--train_dataset", str(data_dir / "pretrain"),
                       "--validation_data", str(data_dir / "eval"), "--output_dir", str(output_dir),
                       "--init_from_mrm", str(towers / "MRM.pth"), "--init_from_cxr_bert", str(towers / "cxr-bert-demo"),
                       "--processor_config", str(DEMO_PROCESSOR)]
    if args.num_train_epochs is not None:
        train_arguments += ["--num_train_epochs", str(args.num_train_epochs)]
    if args.resume:
        train_arguments += ["--resume_from_checkpoint", "latest"]
    model_dir = train.main(train_arguments + args.train_arg)
    trained = time.perf_counter()

    model = AltaModel.from_pretrained(model_dir).eval()
    processor = load_processor(model_dir)
    result = run_task("demo", model, processor, data_dir / "eval", split="test", output_dir=output_dir / "evaluation",
                      model_name=str(model_dir), progress=False)
    training_args = json.loads((model_dir / "training_args.json").read_text())
    checks = _checks(model_dir, towers, data_dir / "pretrain")
    finished = time.perf_counter()
    summary = {
        "model_dir": str(model_dir),
        "metrics": result["metrics"],
        "trainable_policy": training_args["trainable_policy"],
        "adapter_type": training_args.get("adapter_type"),
        "init_from_mrm": training_args["init_from_mrm"],
        "init_from_cxr_bert": training_args["init_from_cxr_bert"],
        "checks": checks,
        "seconds": {"total": round(finished - start, 1), "training": round(trained - data_ready, 1)},
        "peak_memory_mib": _peak_memory_mib(),
    }
    (output_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(summary, format_table(result), output_dir)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
