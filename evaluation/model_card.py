"""Model cards for ALTA models: Hub metadata (licence, base models, datasets, model-index) plus a README.

Built with huggingface_hub's `ModelCardData` / `EvalResult` / `ModelCard` from the model's config,
its parameter counts, the training configuration and `run_task` results (metrics.json contents).
"""

import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = [
    "build_model_card",
    "count_parameters",
    "licence_terms",
    "drop_secrets",
    "PHYSIONET_LICENSE",
    "OFFICIAL_LICENSE",
]

logger = logging.getLogger(__name__)

OFFICIAL_LICENSE = "cc-by-nc-4.0"
PHYSIONET_LICENSE = {
    "license": "other",
    "license_name": "physionet-credentialed-health-data-license-1.5.0",
    "license_link": "https://physionet.org/about/licenses/physionet-credentialed-health-data-license-150/",
}
CXR_BERT = "microsoft/BiomedVLP-CXR-BERT-specialized"

# (dataset type, dataset name) of every evaluation task, as they appear in the model-index.
TASK_DATASETS = {
    "chexpert_8x200": ("chexpert-8x200", "CheXpert 8x200, ConVIRT retrieval set"),
    "chexpert_5x200": ("chexpert-5x200", "CheXpert 5x200, GLoRIA set"),
    "rsna": ("rsna-pneumonia", "RSNA Pneumonia Detection Challenge"),
    "mimic_5x200": ("mimic-cxr-5x200", "MIMIC-CXR 5x200"),
    "demo": ("alta-hf-demo", "alta-hf demo data (synthetic)"),
}
# metric-name prefix -> (task type, task name)
DIRECTIONS = {
    "image_to_image": ("image-retrieval", "Image-to-image retrieval"),
    "text_to_image": ("text-to-image-retrieval", "Text-to-image retrieval"),
    "image_to_text": ("image-to-text-retrieval", "Image-to-text retrieval"),
    "zero_shot": ("zero-shot-image-classification", "Zero-shot classification"),
}
METRIC_NAMES = {"accuracy": "Accuracy", "macro_f1": "Macro-F1", "f1": "F1", "roc_auc": "AUROC"}
_SECRET = re.compile(r"token|password|secret|api[_-]?key|credential", re.IGNORECASE)

_CITATION = """@article{alta2025,
  title   = {Efficient medical vision-language alignment through adapting masked vision models},
  author  = {Lian and others},
  journal = {IEEE Transactions on Medical Imaging},
  year    = {2025},
  eprint  = {2506.08990},
  archivePrefix = {arXiv}
}"""


def drop_secrets(value):
    """A copy of a (nested) configuration without keys that look like credentials (`hub_token`, ...)."""
    if isinstance(value, Mapping):
        return {key: drop_secrets(item) for key, item in value.items() if not _SECRET.search(str(key))}
    if isinstance(value, (list, tuple)):
        return [drop_secrets(item) for item in value]
    return value


def count_parameters(model) -> dict[str, int]:
    """`{"trainable", "total"}` parameter counts (shared tensors counted once)."""
    parameters = list(model.parameters())
    return {"trainable": sum(p.numel() for p in parameters if p.requires_grad), "total": sum(p.numel() for p in parameters)}


def _training_data(training_args: Mapping | None, training_data: str | None, official_weights: bool) -> str:
    if official_weights:
        return "official"
    if training_data:
        return training_data.lower()
    text = json.dumps(drop_secrets(training_args or {}), default=str).lower()
    for kind in ("mimic", "demo"):
        if kind in text:
            return kind
    return "unknown"


def licence_terms(data: str, license: str | None = None) -> tuple[dict, str]:
    """Card metadata fields for the licence, and the paragraph that explains it."""
    physionet = (
        "MIMIC-CXR-JPG is credentialed data: weights trained on it are covered by the PhysioNet "
        "Credentialed Health Data License 1.5.0 and its data use agreement. Share them only with "
        "credentialed PhysioNet users (keep the repository private or gated), and never use them to "
        "try to re-identify patients."
    )
    if license is not None:
        return {"license": license}, (
            f"Licence: `{license}` (set by the uploader). The terms of the base models and training data below still apply."
        )
    if data == "official":
        return {"license": OFFICIAL_LICENSE}, (
            "These weights are converted from the official ALTA checkpoint, released under CC BY-NC 4.0 "
            "(non-commercial use only). " + physionet
        )
    if data == "mimic":
        return dict(PHYSIONET_LICENSE), physionet
    return {"license": "other"}, (
        "No licence was set for these weights. Their terms follow from the base checkpoints and the "
        "training data listed below; the uploader should state them."
    )


def _architecture(config: Mapping) -> str:
    vision, text = config.get("vision_config") or {}, config.get("text_config") or {}
    parts = []
    if vision:
        parts.append(
            f"image tower ViTMAE ({vision.get('num_hidden_layers', '?')} layers, "
            f"hidden size {vision.get('hidden_size', '?')}, {vision.get('image_size', '?')} px input, "
            f"patch {vision.get('patch_size', '?')})"
        )
    if text:
        parts.append(f"text tower BERT ({text.get('num_hidden_layers', '?')} layers, hidden size {text.get('hidden_size', '?')})")
    if config.get("projection_dim"):
        parts.append(f"a shared {config['projection_dim']}-dimensional embedding space")
    return "; ".join(parts) if parts else f"model type `{config.get('model_type', 'unknown')}`"


def _config_and_counts(model_or_dir, parameter_counts):
    """The config as a dict, and the parameter counts (from the model, loaded from the folder if needed)."""
    if isinstance(model_or_dir, (str, Path)):
        folder = Path(model_or_dir)
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{folder}: no config.json (not a saved model folder)")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if parameter_counts is None:
            from transformers import AutoModel

            parameter_counts = count_parameters(AutoModel.from_pretrained(folder, trust_remote_code=True))
        return config, parameter_counts
    config = model_or_dir.config.to_dict() if hasattr(model_or_dir.config, "to_dict") else dict(vars(model_or_dir.config))
    return config, parameter_counts or count_parameters(model_or_dir)


def _eval_results(evaluation: Mapping) -> list[EvalResult]:
    dataset_type, dataset_name = TASK_DATASETS.get(evaluation["task"], (evaluation["task"], evaluation["task"]))
    split = evaluation.get("split")
    results = []
    for name, value in evaluation["metrics"].items():
        if not isinstance(value, (int, float)):
            continue
        direction, _, metric = name.rpartition("/")
        task_type, task_name = DIRECTIONS.get(direction, DIRECTIONS["zero_shot"])
        if metric.startswith("precision_at_"):
            k = metric.rsplit("_", 1)[1]
            metric_type, metric_name = f"precision_at_{k}", f"{task_name} P@{k}"
        else:
            metric_type, metric_name = metric, METRIC_NAMES.get(metric, metric)
        results.append(EvalResult(
            task_type=task_type, task_name=task_name, dataset_type=dataset_type, dataset_name=dataset_name,
            dataset_split=split, metric_type=metric_type, metric_name=metric_name, metric_value=round(float(value), 6),
        ))
    return results


def _evaluation_section(evaluations: Sequence[Mapping], figures: Sequence[Sequence[str]]) -> str:
    if not evaluations:
        return "No evaluation results were attached to this card (see alta-hf's `eval.py`).\n"
    blocks = []
    for evaluation, images in zip(evaluations, figures):
        _, dataset_name = TASK_DATASETS.get(evaluation["task"], (None, evaluation["task"]))
        rows = "\n".join(f"| `{name}` | {value:.4f} |" for name, value in evaluation["metrics"].items())
        heading = f"### {dataset_name} (`{evaluation['task']}`, split `{evaluation.get('split')}`)"
        block = f"{heading}\n\n| metric | value |\n|---|---|\n{rows}\n"
        skipped = (evaluation.get("images") or {}).get("skipped", 0)
        if skipped:
            block += f"\n{skipped} unreadable image(s) were skipped.\n"
        block += "".join(f"\n![{Path(image).stem.replace('_', ' ')}]({image})\n" for image in images)
        blocks.append(block)
    return "\n".join(blocks)


def _training_section(training_args: Mapping | None) -> str:
    if not training_args:
        return "No training configuration was attached.\n"
    rows = [
        f"| `{key}` | `{value}` |"
        for key, value in sorted(drop_secrets(training_args).items())
        if isinstance(value, (str, int, float, bool, type(None)))
    ]
    return "| setting | value |\n|---|---|\n" + "\n".join(rows) + "\n"


def _usage(repo_id: str) -> str:
    return f"""```python
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)

# Zero-shot pneumonia score as in ALTA's RSNA protocol: softmax over the two prompt cosines.
image = Image.open("frontal_chest_xray.jpg").convert("L")
prompts = ["There is pneumonia", "There is no pneumonia"]
with torch.no_grad():
    pixel_values = processor(images=[image], return_tensors="pt")["pixel_values"]
    text = processor(text=prompts, padding="max_length", max_length=10, return_tensors="pt")
    image_embedding = F.normalize(model.get_image_features(pixel_values=pixel_values).pooler_output, dim=-1)
    text_embedding = F.normalize(
        model.get_text_features(input_ids=text["input_ids"], attention_mask=text["attention_mask"]).pooler_output,
        dim=-1,
    )
probabilities = (image_embedding @ text_embedding.T).softmax(dim=-1)
print(f"pneumonia score: {{probabilities[0, 0]:.3f}}")
```
"""


def build_model_card(
    model_or_dir,
    evaluations: Sequence[Mapping] = (),
    training_args: Mapping | None = None,
    *,
    repo_id: str | None = None,
    model_name: str | None = None,
    license: str | None = None,
    official_weights: bool = False,
    training_data: str | None = None,
    base_models: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    parameter_counts: Mapping[str, int] | None = None,
    evaluation_figures: Sequence[Sequence[str]] | None = None,
    loss_curves: str | None = None,
) -> ModelCard:
    """Model card of an ALTA model.

    Args:
        model_or_dir: a saved model folder (its `config.json`; the model is loaded to count
            parameters unless `parameter_counts` is given) or a model object.
        evaluations: `run_task` results / `metrics.json` contents; each becomes model-index entries
            and a table.
        training_args: the training configuration (keys that look like secrets, e.g. `hub_token`,
            are never written).
        repo_id: the Hub id used in the loading example.
        license: overrides the licence derived from `official_weights` / the training data.
        official_weights: converted from the official ALTA checkpoint (CC BY-NC 4.0).
        training_data: `"mimic"`, `"demo"`, ...; guessed from `training_args` when not given.
        base_models: Hub ids of the base checkpoints (default: CXR-BERT for ALTA configs).
        datasets: training dataset ids for the metadata (default: `mimic-cxr-jpg` for MIMIC runs).
        parameter_counts: `{"trainable", "total"}`; train.py should pass the training model's counts.
        evaluation_figures: per evaluation, image paths relative to the card (embedded in the README).
        loss_curves: path of a training-curve PNG relative to the card.
    """
    config, counts = _config_and_counts(model_or_dir, parameter_counts)
    is_alta = config.get("model_type") == "alta"
    data = _training_data(training_args, training_data, official_weights)
    licence_metadata, licence_text = licence_terms(data, license)
    repo_id = repo_id or model_name or "path/to/model"
    model_name = model_name or repo_id.rsplit("/", 1)[-1]
    if base_models is None:
        base_models = [CXR_BERT] if is_alta else []
    if datasets is None:
        datasets = ["mimic-cxr-jpg"] if data in ("mimic", "official") else []
    evaluations = list(evaluations)
    figures = list(evaluation_figures) if evaluation_figures is not None else [[] for _ in evaluations]
    if len(figures) != len(evaluations):
        raise ValueError(f"{len(figures)} figure lists for {len(evaluations)} evaluations")
    eval_results = [result for evaluation in evaluations for result in _eval_results(evaluation)]

    card_data = ModelCardData(
        model_name=model_name,
        language="en",
        library_name="transformers",
        pipeline_tag="zero-shot-image-classification",
        tags=["medical", "radiology", "chest-x-ray", "vision-language", "alta", "custom_code"],
        base_model=list(base_models) or None,
        datasets=list(datasets) or None,
        eval_results=eval_results or None,
        **licence_metadata,
    )
    trainable, total = counts["trainable"], counts["total"]
    share = f"{100 * trainable / total:.1f}%" if total else "n/a"
    loss_block = f"\n![training curves]({loss_curves})\n" if loss_curves else ""
    mrm_text = "; ALTA's image tower starts from the MRM checkpoint (github.com/RL4M/MRM-pytorch)" if is_alta else ""
    base_text = ", ".join(f"[`{b}`](https://huggingface.co/{b})" for b in base_models) or "not recorded"
    data_text = {
        "official": "MIMIC-CXR-JPG (the official ALTA run)",
        "mimic": "MIMIC-CXR-JPG",
        "demo": "alta-hf's synthetic demo data",
    }.get(data, "not recorded")
    body = f"""
# {model_name}

An ALTA (ALign Through Adapting) model for chest radiographs and radiology reports, in alta-hf's
Hugging Face format: {_architecture(config)}. ALTA adapts a masked-record-modeling ViT (MRM) and
CXR-BERT with small bottleneck adapters and aligns them with global and local contrastive losses
while keeping the masked image and language modeling objectives.

**Not for clinical use.** This is a research model. It has not been validated for diagnosis,
triage or any decision about patients.

## Intended use and limitations

- Intended for research: image-report retrieval, zero-shot classification of chest X-ray findings
  and representation learning on frontal chest radiographs.
- Inference uses a single frontal image; the training-time lateral and prior-study views are not used.
- Zero-shot scores are similarities, not calibrated probabilities; thresholds chosen on one dataset
  do not transfer to another.
- ALTA's training data (MIMIC-CXR) come from one US hospital and English reports; expect lower
  accuracy on other populations, devices, views, languages and report styles, and possible
  demographic biases.

## Licence and data terms

{licence_text}

## How to use

The model and processor ship their own code (`trust_remote_code=True`):

{_usage(repo_id)}
## Training

- Base models: {base_text}{mrm_text}.
- Training data: {data_text}.

{_training_section(training_args)}{loss_block}
## Parameters

| trainable | total | trainable share |
|---|---|---|
| {trainable:,} | {total:,} | {share} |

## Evaluation

Protocols of the ALTA paper, computed with alta-hf's `eval.py` (cosine similarity of the
L2-normalised projected embeddings).

{_evaluation_section(evaluations, figures)}
## Citation

```bibtex
{_CITATION}
```
"""
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")
