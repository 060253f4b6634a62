"""Upload a saved ALTA model folder to the Hugging Face Hub in one commit.

The commit holds the model folder's files (weights, config, remote code, processor), a generated
model card (README.md) and the evaluation outputs (`metrics.json` + PNGs under `evaluation/<task>/`).

    python -m alta_hf.evaluation.hub --folder outputs/alta --repo-id me/alta-mimic --eval-dir eval/rsna --private

The token comes from the `token` argument, `HF_TOKEN` or `hf auth login`; it is never printed or logged.
"""

import argparse
import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi

from .model_card import PHYSIONET_LICENSE, build_model_card, drop_secrets
from .plots import plot_loss_curves

__all__ = ["push_folder_to_hub", "collect_evaluations", "main"]

logger = logging.getLogger(__name__)

# Never uploaded: hidden and temporary files, and pickles (weights travel as safetensors).
DEFAULT_IGNORE = (".*", "*.tmp*", "*.lock", "*.pt", "*.pth", "*.pkl", "*.bin")
# Files this small are checked for an explicitly passed token before upload.
_TOKEN_SCAN_LIMIT = 16 << 20
TRAINING_ARGS_FILE = "training_args.json"
LOSS_CURVES_FILE = "loss_curves.png"


def collect_evaluations(eval_dirs: Sequence) -> list[tuple[str, dict, list[Path]]]:
    """`(folder name in the repo, metrics.json content, files)` for each evaluation output folder."""
    collected, used = [], set()
    for directory in map(Path, eval_dirs):
        metrics_path = directory / "metrics.json"
        if not metrics_path.is_file():
            raise FileNotFoundError(f"{directory}: no metrics.json (run eval.py with --output-dir {directory})")
        result = json.loads(metrics_path.read_text(encoding="utf-8"))
        name = result.get("task", directory.name)
        if name in used:
            name = f"{name}-{result.get('split', directory.name)}"
        if name in used:
            raise ValueError(f"{directory}: two evaluation folders map to evaluation/{name}")
        used.add(name)
        collected.append((name, result, [metrics_path, *sorted(directory.glob("*.png"))]))
    return collected


def _folder_files(folder: Path, ignore: Sequence[str]) -> list[Path]:
    # A model folder is flat; sub-folders (checkpoints, logs, caches) are not part of the model.
    return [
        path for path in sorted(folder.iterdir())
        if path.is_file() and not any(fnmatch(path.name, pattern) for pattern in ignore)
    ]


def _refuse_files_holding(token: str, uploads: Mapping[str, Path]) -> None:
    secret = token.encode()
    for name, path in uploads.items():
        if path.stat().st_size <= _TOKEN_SCAN_LIMIT and secret in path.read_bytes():
            raise ValueError(f"{path} contains the Hub token; remove it before uploading (nothing was uploaded)")


def push_folder_to_hub(
    folder,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload ALTA model, processor, code, model card and evaluation",
    eval_dirs: Sequence = (),
    training_args: Mapping | None = None,
    training_logs=None,
    card: bool = True,
    card_kwargs: Mapping | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    ignore_patterns: Sequence[str] = DEFAULT_IGNORE,
):
    """Create the repo (if needed) and upload everything in one commit.

    Args:
        folder: saved model folder (`save_pretrained` of model and processor, with their code).
        repo_id: `namespace/name` on the Hub.
        token: Hub token; `None` uses `HF_TOKEN` or the stored login. Never printed or logged.
        private: create the repository private (recommended for MIMIC-trained weights).
        eval_dirs: `eval.py` output folders; their `metrics.json` and PNGs go to `evaluation/<task>/`
            and their metrics into the card's model-index.
        training_args: training configuration for the card (default: `folder/training_args.json`).
        training_logs: TensorBoard folder or JSONL log; its curves are uploaded as `loss_curves.png`
            (a `loss_curves.png` already in the folder is used otherwise).
        card: write a generated README.md (model card); `False` keeps the folder's own README.md.
        card_kwargs: extra arguments of `build_model_card` (`license`, `official_weights`,
            `training_data`, `parameter_counts`, ...).

    Returns:
        huggingface_hub's `CommitInfo` (`commit_url`, `oid`, ...).
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json; save the model (and processor) there first")
    evaluations = collect_evaluations(eval_dirs)
    if training_args is None and (folder / TRAINING_ARGS_FILE).is_file():
        training_args = json.loads((folder / TRAINING_ARGS_FILE).read_text(encoding="utf-8"))

    with tempfile.TemporaryDirectory() as scratch:
        uploads = {path.name: path for path in _folder_files(folder, ignore_patterns)}
        if training_logs is not None:
            uploads[LOSS_CURVES_FILE] = Path(scratch) / LOSS_CURVES_FILE
            plot_loss_curves(training_logs, uploads[LOSS_CURVES_FILE])
        figures = []
        for name, _, files in evaluations:
            figures.append([f"evaluation/{name}/{path.name}" for path in files if path.suffix == ".png"])
            uploads.update({f"evaluation/{name}/{path.name}": path for path in files})
        if card:
            model_card = build_model_card(
                folder, [result for _, result, _ in evaluations], training_args, repo_id=repo_id,
                evaluation_figures=figures, loss_curves=LOSS_CURVES_FILE if LOSS_CURVES_FILE in uploads else None,
                **(card_kwargs or {}),
            )
            if model_card.data.license_name == PHYSIONET_LICENSE["license_name"] and not private:
                logger.warning("%s holds MIMIC-derived weights: PhysioNet's terms allow sharing only with "
                               "credentialed users; consider private=True", repo_id)
            uploads["README.md"] = Path(scratch) / "README.md"
            model_card.save(uploads["README.md"])
        if TRAINING_ARGS_FILE in uploads:  # a saved configuration may hold a hub token: upload it without secrets
            saved = json.loads(uploads[TRAINING_ARGS_FILE].read_text(encoding="utf-8"))
            uploads[TRAINING_ARGS_FILE] = Path(scratch) / TRAINING_ARGS_FILE
            uploads[TRAINING_ARGS_FILE].write_text(json.dumps(drop_secrets(saved), indent=2), encoding="utf-8")
        if token:
            _refuse_files_holding(token, uploads)
        operations = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in uploads.items()
        ]
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.create_commit(
            repo_id, operations, commit_message=commit_message, revision=revision, create_pr=create_pr
        )
    logger.info("uploaded %d files to %s in one commit (%s)", len(operations), repo_id, commit.commit_url)
    return commit


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Upload a saved ALTA model folder (+ card + evaluation) to the Hub in one commit. "
        "The token comes from HF_TOKEN or `hf auth login`."
    )
    parser.add_argument("--folder", required=True, help="saved model folder")
    parser.add_argument("--repo-id", required=True, help="namespace/name on the Hub")
    parser.add_argument("--eval-dir", action="append", default=[], help="eval.py output folder (repeatable)")
    parser.add_argument("--private", action="store_true", help="create a private repository")
    parser.add_argument("--training-args", help=f"JSON training configuration (default: FOLDER/{TRAINING_ARGS_FILE})")
    parser.add_argument("--training-logs", help="TensorBoard folder or JSONL log to plot as loss_curves.png")
    parser.add_argument("--keep-readme", action="store_true", help="upload the folder's README.md instead of generating a card")
    parser.add_argument("--license", help="licence id for the card (default: derived from the weights and data)")
    parser.add_argument("--official-weights", action="store_true", help="weights converted from the official ALTA checkpoint")
    parser.add_argument("--training-data", help="mimic, demo, ... (default: guessed from the training args)")
    parser.add_argument("--commit-message", default="Upload ALTA model, processor, code, model card and evaluation")
    parser.add_argument("--revision", help="branch to commit to")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    training_args = json.loads(Path(args.training_args).read_text(encoding="utf-8")) if args.training_args else None
    card_kwargs = dict(license=args.license, official_weights=args.official_weights, training_data=args.training_data)
    commit = push_folder_to_hub(
        args.folder, args.repo_id, private=args.private or None, commit_message=args.commit_message,
        eval_dirs=args.eval_dir, training_args=training_args, training_logs=args.training_logs,
        card=not args.keep_readme, card_kwargs=card_kwargs, revision=args.revision,
    )
    print(f"pushed {args.folder} to {args.repo_id}: {commit.commit_url}")
    return commit


if __name__ == "__main__":
    main()
