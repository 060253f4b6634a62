"""The one-command demo: generate the demo data, train a small ALTA on 2 CPU cores, evaluate it, print the figures.

    python -m training.demo                      # = make demo; about 12 minutes on 2 cores
    python -m training.demo --num-train-epochs 2 --output-dir outputs/demo-short

The data goes to `demo_data/` (generated once, reused afterwards), the run to `outputs/demo/`; the trained model
folder (`outputs/demo/model`) loads with `AutoModel.from_pretrained(..., trust_remote_code=True)` and
`AutoProcessor`. Figures are the zero-shot accuracy and retrieval precision on the demo test split, which training
never sees (validation picks the best epoch on the separate validation split).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
_DATA_PARTS = ("pretrain", "eval", "tokenizer")


def _limit_threads() -> None:
    # Two cores: the training process and its loader worker each get one thread; oversubscribed BLAS threads made
    # steps 4-6x slower when measured on the 2-core CI machine. Must run before torch is imported.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")


def _ensure_demo_data(data_dir: Path, num_train_studies: int | None) -> None:
    if all((data_dir / part).is_dir() for part in _DATA_PARTS):
        print(f"demo data: reusing {data_dir}")
        return
    from dataset_scripts.demo import main as generate_demo_data

    # No prior studies: with towers trained from scratch, the global loss otherwise learns whether a prior slot is
    # present (the reports compare with the prior) instead of the findings (benchmarks/RESULTS.md, "Why the demo
    # does not learn"). Laterals stay: the reports rarely mention them.
    arguments = ["--output-dir", str(data_dir), "--overwrite", "--prior-fraction", "0"]
    if num_train_studies is not None:
        arguments += ["--num-train-studies", str(num_train_studies)]
    print(f"demo data: generating {data_dir} (about a minute)")
    if generate_demo_data(arguments) != 0:
        raise SystemExit(f"demo data generation into {data_dir} failed")


def _parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="demo_data", help="demo data folder (generated when absent)")
    parser.add_argument("--output-dir", default="outputs/demo", help="training run folder")
    parser.add_argument("--num-train-epochs", type=int, default=None, help="override configs/demo.yaml")
    parser.add_argument("--num-train-studies", type=int, default=None, help="studies to generate (default 1500)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last checkpoint")
    parser.add_argument("--train-arg", action="append", default=[], metavar="ARG",
                        help="extra train.py argument, repeatable (e.g. --train-arg=--adapter_type=lora)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = _parse(argv)
    _limit_threads()
    data_dir, output_dir = Path(args.data_dir), Path(args.output_dir)
    start = time.perf_counter()
    _ensure_demo_data(data_dir, args.num_train_studies)

    import training.loop as train
    from evaluation import format_table, run_task
    from modeling_alta import AltaModel
    from processing import load_processor

    train_arguments = ["--config", str(DEMO_CONFIG), "--train_dataset", str(data_dir / "pretrain"),
                       "--validation_data", str(data_dir / "eval"), "--output_dir", str(output_dir)]
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
    finished = time.perf_counter()
    summary = {
        "model_dir": str(model_dir),
        "metrics": result["metrics"],
        "seconds": {"total": round(finished - start, 1), "training": round(trained - start, 1)},
    }
    (output_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print()
    print(format_table(result))
    print()
    print(f"model folder: {model_dir}  (AutoModel/AutoProcessor.from_pretrained(..., trust_remote_code=True))")
    print(f"evaluation:   {output_dir / 'evaluation'}   logs: {output_dir / 'logs'} (tensorboard --logdir)")
    print(f"time:         {summary['seconds']['total']:.0f} s in all, {summary['seconds']['training']:.0f} s until "
          "the model was saved")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
