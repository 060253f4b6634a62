"""Evaluation and training plots as PNG files (matplotlib's object API: headless, no global backend).

`python -m alta_hf.evaluation.plots LOG_DIR_OR_JSONL --output loss_curves.png` draws a training run's scalar
curves (TensorBoard event files written by accelerate's tracker, or a JSONL log).
"""

import argparse
import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "plot_roc_curve",
    "plot_confusion_matrix",
    "plot_precision_at_k",
    "read_scalars",
    "plot_loss_curves",
]


def _save(figure: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    figure.savefig(temporary, dpi=120, bbox_inches="tight")
    os.replace(temporary, path)
    return path


def plot_roc_curve(labels, scores, path, *, title: str = "ROC curve", auc: float | None = None) -> Path:
    """ROC curve of binary `labels` (0/1) against `scores` (higher = more positive)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    false_positive_rate, true_positive_rate, _ = roc_curve(labels, scores)
    auc = roc_auc_score(labels, scores) if auc is None else auc
    figure = Figure(figsize=(4.5, 4.5))
    axes = figure.subplots()
    axes.plot(false_positive_rate, true_positive_rate, label=f"AUROC = {auc:.4f}")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    axes.set(xlabel="False positive rate", ylabel="True positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="lower right")
    return _save(figure, path)


def plot_confusion_matrix(matrix, class_names: Sequence[str], path, *, title: str = "Confusion matrix") -> Path:
    """Confusion matrix (rows = true class, columns = predicted class) with counts in the cells."""
    from sklearn.metrics import ConfusionMatrixDisplay

    matrix = np.asarray(matrix)
    size = 1.2 + 0.8 * len(class_names)
    figure = Figure(figsize=(size + 1.5, size))
    axes = figure.subplots()
    ConfusionMatrixDisplay(matrix, display_labels=list(class_names)).plot(ax=axes, cmap="Blues", xticks_rotation=45, colorbar=True)
    axes.set_title(title)
    return _save(figure, path)


def plot_precision_at_k(per_class: Mapping[str, Mapping[str, float]], path, *, title: str = "Precision@k per class") -> Path:
    """Grouped bars: one group per class, one bar per `precision_at_<k>` entry."""
    classes = list(per_class)
    keys = [key for key in next(iter(per_class.values())) if key.startswith("precision_at_")]
    keys.sort(key=lambda key: int(key.rsplit("_", 1)[1]))
    width = 0.8 / max(len(keys), 1)
    figure = Figure(figsize=(max(5.0, 0.9 * len(classes) + 2), 4))
    axes = figure.subplots()
    positions = np.arange(len(classes))
    for offset, key in enumerate(keys):
        values = [per_class[name][key] for name in classes]
        axes.bar(positions + (offset - (len(keys) - 1) / 2) * width, values, width, label=f"P@{key.rsplit('_', 1)[1]}")
    axes.set_xticks(positions, [str(name) for name in classes], rotation=30, ha="right")
    # Headroom above 1.0 keeps the legend clear of full bars.
    axes.set(ylabel="precision", ylim=(0, 1.2), yticks=np.linspace(0, 1, 6), title=title)
    axes.legend(ncols=len(keys), loc="upper center", fontsize="small", frameon=False)
    return _save(figure, path)


def _read_event_dirs(root: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    scalars: dict[str, dict[int, tuple[float, float]]] = defaultdict(dict)
    event_dirs = sorted({path.parent for path in root.rglob("events.out.tfevents.*")})
    for directory in event_dirs:
        accumulator = EventAccumulator(str(directory), size_guidance={SCALARS: 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars(tag):
                previous = scalars[tag].get(event.step)
                if previous is None or event.wall_time >= previous[0]:  # a resumed run overwrites its steps
                    scalars[tag][event.step] = (event.wall_time, event.value)
    return {tag: sorted((step, value) for step, (_, value) in points.items()) for tag, points in scalars.items()}


def _read_jsonl(path: Path) -> dict[str, list[tuple[int, float]]]:
    scalars: dict[str, dict[int, float]] = defaultdict(dict)
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON object ({error})") from error
            step = record.get("step")
            if not isinstance(step, int):
                raise ValueError(f"{path}:{number}: needs an integer 'step'")
            for tag, value in record.items():
                if tag != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    scalars[tag][step] = float(value)
    return {tag: sorted(points.items()) for tag, points in scalars.items()}


def read_scalars(source) -> dict[str, list[tuple[int, float]]]:
    """Scalar series `{tag: [(step, value), ...]}` from a TensorBoard log folder (searched recursively)
    or a JSONL file with one `{"step": int, tag: value, ...}` object per line."""
    source = Path(source)
    if source.is_file():
        return _read_jsonl(source)
    if source.is_dir():
        return _read_event_dirs(source)
    raise FileNotFoundError(f"{source}: no such log folder or JSONL file")


def plot_loss_curves(source, path, *, prefixes: Sequence[str] | None = None, title: str = "Training curves") -> list[str]:
    """One panel per tag group (the text before the first `/`, e.g. `train`, `val`; bare tags such as
    `lr` get their own panel). `prefixes` keeps only tags starting with one of them.

    Returns:
        The tags that were drawn.
    """
    scalars = read_scalars(source)
    if prefixes:
        scalars = {tag: points for tag, points in scalars.items() if any(tag.startswith(prefix) for prefix in prefixes)}
    if not scalars:
        raise ValueError(f"{source}: no scalar series" + (f" with prefix {list(prefixes)}" if prefixes else ""))
    groups: dict[str, list[str]] = defaultdict(list)
    for tag in sorted(scalars):
        groups[tag.split("/", 1)[0] if "/" in tag else tag].append(tag)
    figure = Figure(figsize=(6, 3 * len(groups)))
    axes_list = np.atleast_1d(figure.subplots(len(groups), 1, squeeze=False)[:, 0])
    for axes, (group, tags) in zip(axes_list, groups.items()):
        for tag in tags:
            steps, values = zip(*scalars[tag])
            axes.plot(steps, values, label=tag, linewidth=1.2)
        axes.set(title=group, xlabel="step")
        axes.legend(fontsize="small")
        axes.grid(alpha=0.3)
    figure.suptitle(title)
    _save(figure, path)
    return sorted(scalars)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Plot a training run's scalar curves (TensorBoard logs or JSONL).")
    parser.add_argument("source", help="TensorBoard log folder (searched recursively) or JSONL file")
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--prefix", action="append", help="only tags starting with this (repeatable)")
    args = parser.parse_args(argv)
    tags = plot_loss_curves(args.source, args.output, prefixes=args.prefix)
    print(f"wrote {args.output} ({len(tags)} series: {', '.join(tags)})")


if __name__ == "__main__":
    main()
