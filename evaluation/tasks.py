"""ALTA's evaluation protocols (docs/evaluation.md "Protocols", docs/datasets.md "Evaluation sets") and `run_task`.

Every task embeds its images and texts once (through an optional on-disk cache), computes its
metrics with the functions in `evaluation.metrics`, and returns one JSON-serialisable result; with
an output folder it also writes `metrics.json` and its plots there.
"""

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .cache import CachedEmbedder, EmbeddingCache, fingerprint, fingerprint_module, fingerprint_processor
from .data import EvalData, EvaluationDataError, load_eval_data
from .embedding import ImageEmbeddings, TextProtocol, eval_mode, text_position_limit
from .metrics import precision_at_k, roc_auc, threshold_protocol, zero_shot_classification
from .plots import plot_confusion_matrix, plot_precision_at_k, plot_roc_curve

__all__ = ["TASKS", "TaskSpec", "run_task", "write_metrics"]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
# Failed images listed in metrics.json (the count is always complete).
MAX_LISTED_FAILURES = 1000


# Token lengths of ALTA's evaluation scripts: protocol settings, not model geometry.
CHEXPERT_8X200_QUERY = TextProtocol(max_length=20, truncation=False, clean=False)
CHEXPERT_5X200_IMPRESSION = TextProtocol(max_length=256, truncation=False, clean=True)
CLASS_PROMPT = TextProtocol(max_length=None, truncation=True, clean=True)
RSNA_PROMPT = TextProtocol(max_length=10, truncation=False, clean=False)
# Not in the paper's scripts: reports as the model saw them in training (cleaned, processor length).
REPORT = TextProtocol(max_length=None, truncation=True, clean=True)

CHEXPERT_8X200_K = (5, 10, 50)
CHEXPERT_5X200_K = (5, 10, 100)
MIMIC_5X200_K = (1, 5, 10)
RSNA_FOLDS, RSNA_SEED, RSNA_STEP = 10, 0, 0.005


@dataclass
class _Outcome:
    metrics: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    protocol: dict = field(default_factory=dict)
    plots: list = field(default_factory=list)  # (file name, plot function, arguments)

    def retrieval(self, name, queries, query_labels, candidates, candidate_labels, ks, class_names) -> None:
        """Label-based P@k of `queries` against `candidates` (embeddings are L2-normalised here)."""
        similarity = (F.normalize(queries, dim=-1) @ F.normalize(candidates, dim=-1).T).double().numpy()
        usable = [k for k in ks if k <= len(candidate_labels)]
        skipped = [k for k in ks if k > len(candidate_labels)]
        if skipped:
            logger.warning("%s: P@%s skipped, only %d candidates", name, skipped, len(candidate_labels))
        if not usable:
            raise EvaluationDataError(f"{name}: {len(candidate_labels)} candidates are fewer than every k in {list(ks)}")
        result = precision_at_k(similarity, query_labels, candidate_labels, k=usable, label_names=class_names)
        for k in usable:
            self.metrics[f"{name}/precision_at_{k}"] = result[f"precision_at_{k}"]
        self.details[name] = {
            "per_class": result["per_class"],
            "num_queries": result["num_queries"],
            "num_candidates": result["num_candidates"],
            "skipped_k": skipped,
        }
        title = f"{name.replace('_', ' ')}: precision@k per class"
        arguments = dict(per_class=result["per_class"], title=title)
        self.plots.append((f"{name}_precision_at_k.png", plot_precision_at_k, arguments))

    def zero_shot(self, name, image_embeddings, labels, class_embeddings, class_names) -> None:
        scores = (F.normalize(image_embeddings, dim=-1) @ class_embeddings.T).double().numpy()
        result = zero_shot_classification(scores, labels, label_names=class_names)
        self.metrics[f"{name}/accuracy"] = result["accuracy"]
        self.metrics[f"{name}/macro_f1"] = result["macro_f1"]
        self.details[name] = {
            "confusion_matrix": result["confusion_matrix"],
            "class_names": list(class_names),
            "per_class": result["per_class"],
            "num_images": len(labels),
        }
        title = f"{name.replace('_', ' ')}: confusion matrix"
        arguments = dict(matrix=result["confusion_matrix"], class_names=class_names, title=title)
        self.plots.append((f"{name}_confusion_matrix.png", plot_confusion_matrix, arguments))


def _labels_of(data: EvalData, split: str, images: ImageEmbeddings) -> np.ndarray:
    return np.asarray(data.labels(split))[images.indices.numpy()]


def _chexpert_8x200(data: EvalData, split: str | None, embed: CachedEmbedder) -> _Outcome:
    names, outcome = data.class_names(), _Outcome()
    candidates = embed.images(data.image_paths("candidates"), "candidates")
    image_queries = embed.images(data.image_paths("image_queries"), "image_queries")
    text_split = data.split("text_queries", ("text", "label"))
    text_queries = embed.texts(text_split["text"], CHEXPERT_8X200_QUERY, "text_queries")
    candidate_labels = _labels_of(data, "candidates", candidates)
    outcome.retrieval("image_to_image", image_queries.embeddings, _labels_of(data, "image_queries", image_queries),
                      candidates.embeddings, candidate_labels, CHEXPERT_8X200_K, names)
    outcome.retrieval("text_to_image", text_queries, np.asarray(data.labels("text_queries")),
                      candidates.embeddings, candidate_labels, CHEXPERT_8X200_K, names)
    outcome.protocol = {"k": list(CHEXPERT_8X200_K), "text_queries": CHEXPERT_8X200_QUERY.describe()}
    return outcome


def _chexpert_5x200(data: EvalData, split: str, embed: CachedEmbedder) -> _Outcome:
    names, outcome = data.class_names(), _Outcome()
    images = embed.images(data.image_paths(split), split)
    labels = _labels_of(data, split, images)
    reports = data.split(split, ("report",))["report"]
    impressions = embed.texts(reports, CHEXPERT_5X200_IMPRESSION, f"{split} impressions")
    report_labels = np.asarray(data.labels(split))
    outcome.retrieval("image_to_text", images.embeddings, labels, impressions, report_labels, CHEXPERT_5X200_K, names)
    classes = embed.class_embeddings(data.class_prompts(), CLASS_PROMPT, "class prompts")
    outcome.zero_shot("zero_shot", images.embeddings, labels, classes, names)
    outcome.protocol = {
        "k": list(CHEXPERT_5X200_K),
        "impressions": CHEXPERT_5X200_IMPRESSION.describe(),
        "class_prompts": {**CLASS_PROMPT.describe(), "counts": {n: len(p) for n, p in data.class_prompts().items()}},
    }
    return outcome


def _rsna(data: EvalData, split: str, embed: CachedEmbedder) -> _Outcome:
    names, outcome = data.class_names(), _Outcome()
    if len(names) != 2:
        raise EvaluationDataError(f"{data.directory}: rsna needs 2 class_names (negative, positive), got {names}")
    images = embed.images(data.image_paths(split), split)
    labels = _labels_of(data, split, images)
    classes = embed.class_embeddings(data.class_prompts(), RSNA_PROMPT, "prompts")
    cosine = F.normalize(images.embeddings, dim=-1) @ classes.T
    # Label 1 (class_names[1]) is the positive class; ALTA's score is softmax([cos_pos, cos_neg])[0].
    scores = torch.softmax(torch.stack([cosine[:, 1], cosine[:, 0]], dim=-1), dim=-1)[:, 0].double().numpy()
    outcome.metrics["roc_auc"] = roc_auc(scores, labels)
    try:
        protocol = threshold_protocol(scores, labels, n_splits=RSNA_FOLDS, seed=RSNA_SEED, step=RSNA_STEP)
    except ValueError as error:  # too few images of one class for 10 stratified folds (small splits)
        logger.warning("rsna: threshold protocol skipped: %s", error)
        outcome.details["threshold_protocol_skipped"] = str(error)
    else:
        outcome.metrics["accuracy"], outcome.metrics["f1"] = protocol["accuracy"], protocol["f1"]
        outcome.details["threshold_protocol"] = protocol
    outcome.details["num_images"] = len(labels)
    outcome.details["positive_class"] = names[1]
    title = f"RSNA pneumonia ({split}): zero-shot ROC"
    arguments = dict(labels=labels, scores=scores, auc=outcome.metrics["roc_auc"], title=title)
    outcome.plots.append(("roc_curve.png", plot_roc_curve, arguments))
    outcome.protocol = {"prompts": RSNA_PROMPT.describe(), "score": "softmax([cos_pos, cos_neg])[0]",
                        "folds": RSNA_FOLDS, "seed": RSNA_SEED, "threshold_step": RSNA_STEP}
    return outcome


def _report_retrieval(data: EvalData, split: str, embed: CachedEmbedder, outcome: _Outcome) -> ImageEmbeddings:
    """Text-to-image and image-to-text P@1/5/10 between a split's images and its reports."""
    names = data.class_names()
    images = embed.images(data.image_paths(split), split)
    image_labels, report_labels = _labels_of(data, split, images), np.asarray(data.labels(split))
    reports = embed.texts(data.split(split, ("report",))["report"], REPORT, f"{split} reports")
    outcome.retrieval("text_to_image", reports, report_labels, images.embeddings, image_labels, MIMIC_5X200_K, names)
    outcome.retrieval("image_to_text", images.embeddings, image_labels, reports, report_labels, MIMIC_5X200_K, names)
    outcome.protocol.update({"k": list(MIMIC_5X200_K), "reports": REPORT.describe()})
    return images


def _mimic_5x200(data: EvalData, split: str, embed: CachedEmbedder) -> _Outcome:
    outcome = _Outcome()
    _report_retrieval(data, split, embed, outcome)
    return outcome


def _demo(data: EvalData, split: str, embed: CachedEmbedder) -> _Outcome:
    outcome = _Outcome()
    images = _report_retrieval(data, split, embed, outcome)
    classes = embed.class_embeddings(data.class_prompts(), CLASS_PROMPT, "class prompts")
    outcome.zero_shot("zero_shot", images.embeddings, _labels_of(data, split, images), classes, data.class_names())
    outcome.protocol["class_prompts"] = CLASS_PROMPT.describe()
    return outcome


@dataclass(frozen=True)
class TaskSpec:
    name: str
    run: Callable[[EvalData, str | None, CachedEmbedder], _Outcome]
    default_split: str | None  # None: the task uses fixed splits
    description: str


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("chexpert_8x200", _chexpert_8x200, None,
                 "image-to-image and text-to-image retrieval, P@5/10/50 per class and overall"),
        TaskSpec("chexpert_5x200", _chexpert_5x200, "test",
                 "image-to-text retrieval P@5/10/100; zero-shot classification with the prompt ensemble"),
        TaskSpec("rsna", _rsna, "test", "zero-shot pneumonia AUROC; accuracy/F1 with 10-fold F1-chosen thresholds"),
        TaskSpec("mimic_5x200", _mimic_5x200, "test", "text-to-image and image-to-text retrieval, P@1/5/10"),
        TaskSpec("demo", _demo, "test", "zero-shot accuracy/macro-F1/confusion and retrieval P@1/5/10 on the demo data"),
    )
}


def _json_ready(value):
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_metrics(result: dict, output_dir) -> Path:
    """Write `metrics.json` atomically into `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / METRICS_FILE
    temporary = path.with_name(f".{METRICS_FILE}.tmp{os.getpid()}")
    temporary.write_text(json.dumps(_json_ready(result), indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def run_task(
    task: str,
    model,
    processor,
    data_dir,
    *,
    split: str | None = None,
    image_root=None,
    output_dir=None,
    batch_size: int = 32,
    device=None,
    num_workers: int = 0,
    cache_dir=None,
    model_fingerprint: str | None = None,
    draft_decode: bool = False,
    progress: bool = True,
    model_name: str | None = None,
) -> dict:
    """Run one evaluation protocol and return its result (the content of `metrics.json`).

    Args:
        task: one of `TASKS` (`chexpert_8x200`, `chexpert_5x200`, `rsna`, `mimic_5x200`, `demo`).
        model: anything with `get_image_features` / `get_text_features` (docs/design.md); run in
            eval mode under `no_grad`, its previous mode restored afterwards.
        processor: the matching processor (`processor(images=...)`, `processor(text=...)`).
        data_dir: a dataset folder built by `dataset_scripts` for this task.
        split: the split to evaluate (default: the task's, e.g. `test`; RSNA/demo validation use
            `validation`); ignored by `chexpert_8x200`, whose splits are fixed.
        image_root: overrides the folder's `image_root`.
        output_dir: if given, `metrics.json` and the task's PNG plots are written there.
        device: `None` keeps the model where it is; otherwise the model is moved there.
        cache_dir: if given, embeddings are cached there, keyed by model + processor + input content.
        model_fingerprint: content hash of the model (e.g. `fingerprint_model_dir`); computed from
            the weights when caching and not given.

    Returns:
        `{"task", "split", "model", "data_dir", "image_root", "metrics": {name: float}, "details",
        "protocol", "images": {"evaluated", "skipped", "skipped_files"}, "embedding", "seconds", "plots"}`.
        Metric names: RSNA `roc_auc`, `accuracy`, `f1`; otherwise `<direction>/precision_at_<k>`
        and `zero_shot/accuracy`, `zero_shot/macro_f1`.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    spec = TASKS[task]
    started = time.perf_counter()
    data = load_eval_data(data_dir, image_root=image_root, expected_kind=task)
    split = None if spec.default_split is None else (split or spec.default_split)
    cache, model_key = None, None
    if cache_dir is not None:
        cache = EmbeddingCache(cache_dir)
        model_key = fingerprint(model_fingerprint or fingerprint_module(model), fingerprint_processor(processor))
    embed = CachedEmbedder(model, processor, batch_size=batch_size, device=device, num_workers=num_workers,
                      draft_decode=draft_decode, progress=progress, cache=cache, model_key=model_key)
    with eval_mode(model):
        outcome = spec.run(data, split, embed)
    outcome.protocol["model_text_positions"] = text_position_limit(model)
    result = {
        "task": task,
        "split": split if split is not None else "candidates+image_queries+text_queries",
        "model": model_name or getattr(model, "name_or_path", None) or type(model).__name__,
        "data_dir": str(data.directory),
        "image_root": str(data.image_root),
        "metrics": outcome.metrics,
        "details": outcome.details,
        "protocol": outcome.protocol,
        "images": {
            "evaluated": embed.images_evaluated,
            "skipped": len(embed.failures),
            "skipped_files": embed.failures[:MAX_LISTED_FAILURES],
        },
        "embedding": embed.stats,
        "plots": [],
    }
    if output_dir is not None:
        output_dir = Path(output_dir)
        for file_name, plot, arguments in outcome.plots:
            plot(path=output_dir / file_name, **arguments)
            result["plots"].append(file_name)
    result["seconds"] = round(time.perf_counter() - started, 3)
    if output_dir is not None:
        write_metrics(result, output_dir)
    return result
