"""Synthetic chest-radiograph corpus for the demo: pre-training studies, a zero-shot/retrieval
evaluation set and a small WordPiece tokenizer, generated from a seed in seconds.

    python -m alta_hf.dataset_scripts.demo --output-dir demo_data [--num-train-studies 1500] [--seed 0] [--push-to-hub REPO]

Layout of OUT (the image paths in both datasets are relative to OUT, the `image_root`):

    images/<split>/p<subject>_s<study>_<view>.png   8-bit grayscale PNGs
    pretrain/    DatasetDict train/validate with the MIMIC pre-training columns, alta_dataset.json
                 (kind "pretraining"), build_summary.json
    eval/        DatasetDict validation/test (image_path, label, report), alta_dataset.json
                 (kind "demo", class_names, class_prompts), build_summary.json
    tokenizer/   vocab.txt (+ tokenizer.json, tokenizer_config.json)
    studies.jsonl  the generator's ground truth per study (class, severity, side, lobe, devices, prior)
    build_summary.json
    README.md    dataset card (also one in pretrain/ and eval/)

`--push-to-hub REPO` pushes both datasets to the dataset repo REPO with `Image` columns (configurations "pretrain",
the default, and "eval") and the card: `load_dataset(REPO)` gives the pre-training studies with their pictures,
`load_dataset(REPO, "eval")` the evaluation set.

The output is bitwise reproducible for a seed (see `demo_studies` for the random streams), except
for the absolute `image_root` / `tokenizer_dir` in the JSON files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import datasets

from .common import save_dataset
from .dataset_card import write_dataset_card
from .dataset_hub import push_dataset_card, push_dataset_folder
from .demo_phantom import CLASS_NAMES
from .demo_reports import CLASS_PROMPTS
from .demo_studies import (
    EVAL_COLUMNS,
    EVAL_SPLITS,
    GENERATOR_VERSION,
    PRETRAIN_COLUMNS,
    PRETRAIN_SPLITS,
    STREAMS,
    DemoOptions,
    StudySpec,
    generate_study,
    render_study,
    sample_study,
)
from .demo_tokenizer import build_wordpiece_vocab, save_tokenizer

__all__ = [
    "EVAL_COLUMNS",
    "PRETRAIN_COLUMNS",
    "DemoOptions",
    "DemoOutputExistsError",
    "StudySpec",
    "build_demo_data",
    "main",
    "push_demo_to_hub",
    "render_study",
    "sample_study",
]

class DemoOutputExistsError(FileExistsError):
    """The output folder exists and holds something other than this exact demo build."""


def _features(split: str) -> datasets.Features:
    if split in EVAL_SPLITS:
        return datasets.Features({"image_path": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=list(CLASS_NAMES)),
                                  "report": datasets.Value("string")})
    ids = {"subject_id", "study_id", "prior_study_id"}
    return datasets.Features({name: datasets.Value("int64" if name in ids else "string") for name in PRETRAIN_COLUMNS})


def _generate_split(options: DemoOptions, split: str, root: Path, pool) -> tuple[list[dict], list[dict]]:
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    tasks = [(options, split, index, str(root)) for index in range(options.num_studies(split))]
    results = pool.map(generate_study, tasks, chunksize=16) if pool else map(generate_study, tasks)
    rows, records = zip(*results)
    return list(rows), list(records)


def _save_dataset(splits: dict[str, list[dict]], output_dir: Path, meta: dict, summary: dict,
                  title: str) -> datasets.DatasetDict:
    dataset = datasets.DatasetDict({
        split: datasets.Dataset.from_list(rows, features=_features(split)) for split, rows in splits.items()})
    progress = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        save_dataset(dataset, output_dir, meta, summary, title, __doc__)
    finally:
        if progress:
            datasets.enable_progress_bars()
    return dataset


def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _existing_build(output_dir: Path) -> dict | None:
    try:
        return json.loads((output_dir / "build_summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def build_demo_data(output_dir: str | os.PathLike, options: DemoOptions | None = None, *,
                    num_workers: int | None = None, overwrite: bool = False) -> dict:
    """Generates the demo corpus into `output_dir` and returns the build summary.

    The folder is built beside `output_dir` and moved into place at the end, so an interrupted run
    leaves no half-written dataset. An existing build with the same options is reused as is; any other
    existing folder raises `DemoOutputExistsError` unless `overwrite=True`.
    """
    options = options or DemoOptions()
    output_dir = Path(output_dir).resolve()
    generator = {"name": "alta-hf demo", "version": GENERATOR_VERSION, **dataclasses.asdict(options)}
    if output_dir.exists() and not overwrite:
        existing = _existing_build(output_dir)
        if existing is not None and existing.get("generator") == generator:
            return existing
        reason = "built with other options" if existing else "no demo build_summary.json"
        raise DemoOutputExistsError(f"{output_dir} exists and is not a demo build with these options ({reason}); "
                                    f"pass overwrite=True (--overwrite) to replace it")
    partial = output_dir.with_name(f".{output_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    num_workers = _default_workers() if num_workers is None else num_workers
    try:
        pool = None
        if num_workers > 1:
            # spawn: forking a parent that already runs torch threads can deadlock the children
            pool = ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            generated = {split: _generate_split(options, split, partial, pool) for split in STREAMS}
        finally:
            if pool:
                pool.shutdown()
        summary = _write_outputs(generated, options, generator, partial, output_dir)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        partial.rename(output_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return summary


def _write_outputs(generated, options: DemoOptions, generator: dict, root: Path, final_root: Path) -> dict:
    tokenizer_texts = [row["report"] for row in generated["train"][0]]
    tokenizer_texts += [prompt for prompts in CLASS_PROMPTS.values() for prompt in prompts]
    vocab = build_wordpiece_vocab(tokenizer_texts, max_size=options.vocab_size)
    save_tokenizer(vocab, root / "tokenizer")
    common = {"image_root": str(final_root), "tokenizer_dir": str(final_root / "tokenizer"), "generator": generator}

    def count_images(rows, columns):
        return sum(row[column] is not None for row in rows for column in columns)

    pretrain = {split: generated[split][0] for split in PRETRAIN_SPLITS}
    pretrain_summary = {
        "kind": "pretraining",
        "num_rows": {split: len(rows) for split, rows in pretrain.items()},
        "num_images": {split: count_images(rows, ("frontal_path", "lateral_path", "prior_frontal_path",
                                                  "prior_lateral_path")) for split, rows in pretrain.items()},
        "with_lateral": {split: count_images(rows, ("lateral_path",)) for split, rows in pretrain.items()},
        "with_prior": {split: count_images(rows, ("prior_frontal_path",)) for split, rows in pretrain.items()},
        "skipped": {},
    }
    pretrain_set = _save_dataset(pretrain, root / "pretrain", {"kind": "pretraining", **common}, pretrain_summary,
                                 "ALTA demo pre-training studies (synthetic)")

    evaluation = {split: generated[split][0] for split in EVAL_SPLITS}
    eval_summary = {
        "kind": "demo",
        "num_rows": {split: len(rows) for split, rows in evaluation.items()},
        "per_class": {split: {name: sum(row["label"] == index for row in rows) for index, name in enumerate(CLASS_NAMES)}
                      for split, rows in evaluation.items()},
        "skipped": {},
    }
    eval_meta = {"kind": "demo", **common, "class_names": list(CLASS_NAMES),
                 "class_prompts": {name: list(prompts) for name, prompts in CLASS_PROMPTS.items()}}
    eval_set = _save_dataset(evaluation, root / "eval", eval_meta, eval_summary, "ALTA demo evaluation set (synthetic)")

    with open(root / "studies.jsonl", "w", encoding="utf-8") as handle:
        for split in STREAMS:
            for record in generated[split][1]:
                handle.write(json.dumps(record) + "\n")
    summary = {"generator": generator, "pretrain": pretrain_summary, "eval": eval_summary,
               "tokenizer_vocab_size": len(vocab), "skipped": {}}
    (root / "build_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    both = datasets.DatasetDict({**{f"pretrain/{n}": s for n, s in pretrain_set.items()},
                                 **{f"eval/{n}": s for n, s in eval_set.items()}})
    write_dataset_card(root, both, {"kind": "demo", "generator": generator}, summary, "ALTA demo data (synthetic)",
                       __doc__)
    return summary


def push_demo_to_hub(output_dir: str | os.PathLike, repo_id: str, private: bool | None = None,
                     token: str | None = None) -> None:
    """Push a built demo folder: configuration "pretrain" (the default) and "eval", `Image` columns, the card."""
    from huggingface_hub import DatasetCard

    output_dir = Path(output_dir)
    push_dataset_folder(output_dir / "pretrain", repo_id, config_name="pretrain", set_default=True, private=private,
                        token=token)
    push_dataset_folder(output_dir / "eval", repo_id, config_name="eval", token=token)
    push_dataset_card(repo_id, DatasetCard.load(output_dir / "README.md"), token=token)


def _parse_args(argv):
    defaults = DemoOptions()
    parser = argparse.ArgumentParser(prog="python -m alta_hf.dataset_scripts.demo", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--output-dir", required=True, help="folder to create (the image_root of both datasets)")
    parser.add_argument("--num-train-studies", type=int, default=defaults.num_train_studies)
    parser.add_argument("--num-validate-studies", type=int, default=defaults.num_validate_studies)
    parser.add_argument("--num-eval-per-class", type=int, default=defaults.num_eval_per_class,
                        help="evaluation images per class in each of the validation and test splits")
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="side of the square PNGs")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--lateral-fraction", type=float, default=defaults.lateral_fraction,
                        help="share of studies (and priors) with a lateral view")
    parser.add_argument("--prior-fraction", type=float, default=defaults.prior_fraction,
                        help="share of pre-training studies with a prior study")
    parser.add_argument("--vocab-size", type=int, default=defaults.vocab_size, help="largest tokenizer vocabulary")
    parser.add_argument("--nuisance", action="store_true",
                        help="vary pose, exposure, noise, collimation, text markers and support devices as real "
                             "radiographs do (off: these only slow the demo's learning down)")
    parser.add_argument("--min-severity", type=float, default=defaults.min_severity,
                        help="smallest severity of a positive finding, in (0, 1]")
    parser.add_argument("--num-workers", type=int, default=_default_workers(), help="rendering processes")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--push-to-hub", metavar="REPO", help="then push both datasets to this dataset repo")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repo")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _parse_args(argv)
    try:
        options = DemoOptions(num_train_studies=args.num_train_studies, num_validate_studies=args.num_validate_studies,
                              num_eval_per_class=args.num_eval_per_class, image_size=args.image_size, seed=args.seed,
                              lateral_fraction=args.lateral_fraction, prior_fraction=args.prior_fraction,
                              vocab_size=args.vocab_size, nuisance=args.nuisance, min_severity=args.min_severity)
        start = time.perf_counter()
        summary = build_demo_data(args.output_dir, options, num_workers=args.num_workers, overwrite=args.overwrite)
    except (ValueError, DemoOutputExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    print(f"demo data in {Path(args.output_dir).resolve()} ({time.perf_counter() - start:.1f} s)")
    if args.push_to_hub:
        push_demo_to_hub(args.output_dir, args.push_to_hub, private=args.private or None)
        print(f"pushed to the dataset repo {args.push_to_hub}: load_dataset({args.push_to_hub!r}) or "
              f"load_dataset({args.push_to_hub!r}, 'eval')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
