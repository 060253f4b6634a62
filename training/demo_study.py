"""The adapter study: ALTA's bottleneck adapters against the alternatives, on the same demo towers, data, seed and
schedule (configs/demo.yaml), each variant a `python -m alta_hf.training.demo` run of its own.

    python -m alta_hf.training.demo --study                                   # all variants -> outputs/demo_study/
    python -m alta_hf.training.demo_study --variants alta lora                # a subset

Writes `OUTPUT/study.json` and `OUTPUT/study.md` (the README table): zero-shot accuracy and retrieval P@5 both ways
on the demo test split, training time and peak resident memory (training process + loader worker) of each variant.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

__all__ = ["VARIANTS", "main"]

# name -> (description, training.demo arguments)
VARIANTS = {
    "alta": ("ALTA bottleneck adapters (the demo)", []),
    "lora": ("LoRA at the matched trainable budget", ["--train-arg=--adapter_type=lora"]),
    "full": ("full fine-tuning (every weight)", ["--train-arg=--trainable_policy=all"]),
    "heads": ("frozen towers, projection heads only", ["--train-arg=--trainable_policy=heads"]),
    "no_views": ("ALTA without prior/lateral views", ["--frontal-only"]),
}
_COLUMNS = ("zero-shot acc.", "image->report P@5", "report->image P@5", "trainable", "training s", "peak MiB")


def _row(name: str, summary: dict) -> list[str]:
    metrics, trainable = summary["metrics"], summary["checks"]["trainable"]
    return [VARIANTS[name][0], f"{metrics['zero_shot/accuracy']:.3f}", f"{metrics['image_to_text/precision_at_5']:.3f}",
            f"{metrics['text_to_image/precision_at_5']:.3f}",
            f"{trainable['trainable']:,} ({100 * trainable['share']:.1f} %)",
            f"{summary['seconds']['training']:.0f}", f"{summary['peak_memory_mib']:.0f}"]


def markdown_table(summaries: dict) -> str:
    lines = ["| variant | " + " | ".join(_COLUMNS) + " |", "|---|" + "---:|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(_row(name, summary)) + " |" for name, summary in summaries.items()]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="outputs/demo_study")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--demo-arg", action="append", default=[], metavar="ARG",
                        help="extra training.demo argument for every variant, repeatable")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir)
    summaries = {}
    for name in args.variants:
        run_dir = output_dir / name
        summary_file = run_dir / "demo_summary.json"
        if not summary_file.is_file():  # a finished variant is kept: the study resumes where it stopped
            command = [sys.executable, "-m", "alta_hf.training.demo", "--output-dir", str(run_dir), *VARIANTS[name][1],
                       *args.demo_arg]
            print(f"study: {name}: {' '.join(command)}", flush=True)
            subprocess.run(command, check=True)
        summaries[name] = json.loads(summary_file.read_text())
    table = markdown_table(summaries)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "study.json").write_text(json.dumps(summaries, indent=2) + "\n")
    (output_dir / "study.md").write_text(table + "\n")
    print(table)
    return summaries


if __name__ == "__main__":
    main(sys.argv[1:])
