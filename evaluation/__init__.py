"""ALTA evaluation: embedding, the paper's protocols, metrics, plots, model card and Hub upload.

    from alta_hf.evaluation import run_task
    result = run_task("rsna", model, processor, "data/rsna", split="validation")
    result["metrics"]["roc_auc"]

Names are imported on first use, so `python -m alta_hf.evaluation.hub` / `python -m alta_hf.evaluation.plots` run
cleanly and `import evaluation.metrics` does not pull in torch.
"""

import importlib

_EXPORTS = {
    "TASKS": "tasks",
    "run_task": "tasks",
    "write_metrics": "tasks",
    "format_table": "report",
    "embed_images": "embedding",
    "embed_texts": "embedding",
    "feature_tensor": "embedding",
    "mean_class_embeddings": "embedding",
    "ImageEmbeddings": "embedding",
    "TextProtocol": "embedding",
    "EvalData": "data",
    "EvaluationDataError": "data",
    "load_eval_data": "data",
    "ModelLoadError": "loading",
    "load_model_and_processor": "loading",
    "build_model_card": "model_card",
    "count_parameters": "model_card",
    "push_folder_to_hub": "hub",
    "plot_loss_curves": "plots",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
