"""ALTA evaluation: embedding, the paper's protocols, metrics, plots, model card and Hub upload.

    from evaluation import run_task
    result = run_task("rsna", model, processor, "data/rsna", split="validation")
    result["metrics"]["roc_auc"]
"""

from .data import EvalData, EvaluationDataError, load_eval_data
from .embedding import ImageEmbeddings, embed_images, embed_texts, mean_class_embeddings
from .tasks import TASKS, run_task

__all__ = [
    "TASKS",
    "run_task",
    "embed_images",
    "embed_texts",
    "mean_class_embeddings",
    "ImageEmbeddings",
    "EvalData",
    "EvaluationDataError",
    "load_eval_data",
]
