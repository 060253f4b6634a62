"""ALTA evaluation: embedding, the paper's protocols, metrics, plots, model card and Hub upload.

    from evaluation import run_task
    result = run_task("rsna", model, processor, "data/rsna", split="validation")
    result["metrics"]["roc_auc"]
"""

from .data import EvalData, EvaluationDataError, load_eval_data
from .embedding import ImageEmbeddings, TextProtocol, embed_images, embed_texts, mean_class_embeddings
from .hub import push_folder_to_hub
from .loading import ModelLoadError, load_model_and_processor
from .model_card import build_model_card, count_parameters
from .plots import plot_loss_curves
from .report import format_table
from .tasks import TASKS, run_task, write_metrics

__all__ = [
    "TASKS",
    "run_task",
    "write_metrics",
    "format_table",
    "embed_images",
    "embed_texts",
    "mean_class_embeddings",
    "ImageEmbeddings",
    "TextProtocol",
    "EvalData",
    "EvaluationDataError",
    "load_eval_data",
    "ModelLoadError",
    "load_model_and_processor",
    "build_model_card",
    "count_parameters",
    "push_folder_to_hub",
    "plot_loss_curves",
]
