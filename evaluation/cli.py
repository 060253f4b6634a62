"""Evaluate an ALTA model with the paper's protocols.

    alta-eval --model DIR_OR_HUB_ID --task TASK --data DIR --output-dir OUT
    python eval.py ...                        (the same, from a checkout)

TASK is one of chexpert_8x200, chexpert_5x200, rsna, mimic_5x200, demo (docs/evaluation.md). Writes
OUT/metrics.json and PNG plots, prints a table. Embeddings are cached (OUT/embedding_cache by
default), so re-running with the same model and data is instant. The same protocols are importable:
`from evaluation import run_task`.
"""

import argparse
import logging
import sys
from pathlib import Path

import torch

from alta_hf.evaluation.cache import fingerprint_model_dir
from alta_hf.evaluation.data import EvaluationDataError
from alta_hf.evaluation.loading import ModelLoadError, load_model_and_processor
from alta_hf.evaluation.output_folder import OutputFolderError, ensure_writable_directory
from alta_hf.evaluation.plots import plot_loss_curves
from alta_hf.evaluation.report import format_table
from alta_hf.evaluation.tasks import TASKS, run_task

__all__ = ["parse_args", "main"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="tasks:\n" + "\n".join(f"  {name}: {spec.description}" for name, spec in TASKS.items()),
    )
    parser.add_argument("--model", required=True, help="model folder or Hub repo id (loaded with trust_remote_code=True)")
    parser.add_argument("--task", required=True, choices=list(TASKS))
    parser.add_argument("--data", required=True, help="dataset folder built by dataset_scripts for this task")
    parser.add_argument("--output-dir", required=True, help="where metrics.json and the plots go")
    parser.add_argument("--split", help="split to evaluate (default: the task's; rsna/demo also have 'validation')")
    parser.add_argument("--image-root", help="override the image_root of the dataset's alta_dataset.json")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0, help="image decoding worker processes")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) when --model is a repo id")
    parser.add_argument("--cache-dir", help="embedding cache (default: OUTPUT_DIR/embedding_cache)")
    parser.add_argument("--no-cache", action="store_true", help="always run the model")
    parser.add_argument("--draft-decode", action="store_true",
                        help="decode large JPEGs at reduced size (faster, not bit-identical to the protocol)")
    parser.add_argument("--training-logs", help="also plot a training run's curves (TensorBoard folder or JSONL)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be positive")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output_dir = Path(args.output_dir)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        ensure_writable_directory(output_dir)
        cache_dir = None if args.no_cache else Path(args.cache_dir or output_dir / "embedding_cache")
        if cache_dir is not None:
            ensure_writable_directory(cache_dir, "embedding cache folder")
        dtype = DTYPES[args.dtype]
        model, processor, model_dir = load_model_and_processor(args.model, revision=args.revision, dtype=dtype)
        result = run_task(
            args.task, model, processor, args.data,
            split=args.split, image_root=args.image_root, output_dir=output_dir, batch_size=args.batch_size,
            device=device, num_workers=args.num_workers, cache_dir=cache_dir,
            model_fingerprint=fingerprint_model_dir(model_dir) if cache_dir else None,
            draft_decode=args.draft_decode, progress=not args.quiet, model_name=args.model,
        )
    except (ModelLoadError, EvaluationDataError, OutputFolderError) as error:
        sys.exit(f"eval.py: error: {error}")
    print(format_table(result))
    if args.training_logs:
        tags = plot_loss_curves(args.training_logs, output_dir / "loss_curves.png")
        print(f"\nloss curves ({len(tags)} series) -> {output_dir / 'loss_curves.png'}")
    print(f"\nwrote {output_dir / 'metrics.json'} and {len(result['plots'])} plot(s) in {result['seconds']:.1f} s")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
