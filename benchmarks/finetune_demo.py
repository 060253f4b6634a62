"""Linear probe and adapter fine-tuning of a demo model at 10 % and 100 % of the demo labels: the README figures.

    python -m alta_hf.dataset_scripts.demo_classification --demo-dir demo_data --output-dir demo_data/classification
    python benchmarks/finetune_demo.py --model outputs/demo/model --dataset demo_data/classification \
        --output-dir outputs/finetune-demo [--modes linear_probe adapters] [--fractions 0.1 1.0] [--epochs 8 8]
        [--seed 0]

Runs `python -m alta_hf.training.finetune` once per mode and label fraction (one process each, in turn) and prints a Markdown
table of the test AUROC (macro over the five demo classes, one-vs-rest) with the validation AUROC of the kept epoch,
the training images, the epochs run and the wall time of each run. `--epochs` gives the epoch limit of each label
fraction (early stopping may end a run sooner).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--modes", nargs="+", default=["linear_probe", "adapters"])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.1, 1.0])
    parser.add_argument("--epochs", nargs="+", default=["8", "8"], help="epoch limit per fraction")
    parser.add_argument("--seed", default="0")
    args = parser.parse_args(argv)
    rows = []
    if len(args.epochs) != len(args.fractions):
        parser.error("give one --epochs value per --fractions value")
    for mode, (fraction, epochs) in ((m, r) for m in args.modes for r in zip(args.fractions, args.epochs)):
        out = Path(args.output_dir) / f"{mode}-{fraction:g}"
        start = time.perf_counter()
        subprocess.run([
            sys.executable, "-m", "alta_hf.training.finetune", "--model", args.model, "--dataset", args.dataset,
            "--output-dir", str(out), "--mode", mode, "--label_fraction", str(fraction), "--seed", args.seed,
            "--num-train-epochs", epochs, "--num-workers", "1",
        ], check=True)
        seconds = time.perf_counter() - start
        results = json.loads((out / "finetune_results.json").read_text())
        rows.append(f"| {mode} | {fraction:.0%} | {results['train_images']} | {results['trainable_parameters']:,} | "
                    f"{results['epochs_run']:g} | {results['validation']['auroc']:.3f} | {results['test']['auroc']:.3f} | "
                    f"{seconds:.0f} s |")
    print("| mode | labels | training images | trainable parameters | epochs run | validation AUROC | test AUROC | wall |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
