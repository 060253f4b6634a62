"""What ALTA claims, measured on the demo: masked modelling kept, temporal consistency, the trainable share.

- `reconstruction_loss_on_held_out`: the MAE loss (75 % masked, fixed noise) of the current frontal images of studies
  training never saw, for the converted towers before ALTA training and for the trained model;
- `temporal_consistency_auroc`: for held-out studies with a prior, the cosine similarity of the current and prior
  frontal embeddings, same patient (positives) against every other patient's prior (negatives), as a ROC AUC;
- `trainable_breakdown`: the trainable parameters by kind (adapters, norms, projection heads, ...).
"""

import re
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from alta_hf.training.data import load_pretraining_split, view_sources

__all__ = ["held_out_studies", "reconstruction_loss_on_held_out", "temporal_consistency_auroc", "trainable_breakdown"]

# The held-out pre-training split: the demo data's `validate` studies (training uses `train`).
HELD_OUT_SPLIT = "validate"
_KINDS = OrderedDict([
    ("adapters", r".*\.(bottleneck_(down|up)|lora_[A-Za-z_]+)\..+"),
    ("tower layer norms", r"alta\.(vision_model|text_model)\..*(layernorm|LayerNorm).*"),
    ("projection heads", r"alta\.(visual|text)_(local_)?projection\..+"),
    ("reconstruction decoder (embed, norms, pred, mask token)", r"decoder\..+"),
    ("masked-LM head (transform, bias)", r"mlm_head\..+"),
    ("logit scales, view/time embeddings, [CLS] token", r".+"),
])


def held_out_studies(pretrain_dir, image_root=None) -> tuple[list[dict], "Path"]:
    rows, root, _ = load_pretraining_split(pretrain_dir, HELD_OUT_SPLIT, image_root)
    return [rows[i] for i in range(len(rows))], root


@torch.no_grad()
def reconstruction_loss_on_held_out(model, processor, studies, image_root, seed: int = 0, batch_size: int = 50) -> float:
    """Mean MAE reconstruction loss of `model` (an `AltaForPreTraining`, eval mode) on the studies' current frontals,
    with the same masks (noise drawn from `seed`) for every model, so that before/after compare like with like."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    slots, patches = model.config.num_view_slots, model.config.num_patches
    total, count = 0.0, 0
    for start in range(0, len(studies), batch_size):
        chunk = studies[start:start + batch_size]
        samples = [processor.preprocess_study(view_sources(row, image_root)[0], report=row["report"], augment=False,
                                              generator=torch.Generator().manual_seed(start + i))
                   for i, row in enumerate(chunk)]
        batch = {key: torch.stack([sample[key] for sample in samples]) for key in samples[0]}
        batch["view_mask"] = torch.zeros_like(batch["view_mask"])
        batch["view_mask"][:, 0] = 1
        noise = torch.rand(len(chunk), slots, patches, generator=generator)
        output = model(**batch, noise=noise, compute_contrastive_losses=False)
        total += float(output.reconstruction_loss) * len(chunk)
        count += len(chunk)
    return total / count


@torch.no_grad()
def temporal_consistency_auroc(model, processor, studies, image_root) -> dict:
    """ROC AUC of current-vs-prior frontal similarity: same patient against other patients (unmasked, the inference
    image embedding `get_image_features(...).pooler_output`). `model` is an `AltaModel` (or anything with that
    method)."""
    pairs = [row for row in studies if row.get("prior_frontal_path")]
    if len(pairs) < 2:
        raise ValueError(f"temporal consistency needs at least 2 held-out studies with a prior, found {len(pairs)}")
    from PIL import Image

    def embed(column):
        images = [Image.open(image_root / row[column]).convert("RGB") for row in pairs]
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        return F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)

    was_training = model.training
    model.eval()
    similarity = (embed("frontal_path") @ embed("prior_frontal_path").T).double().numpy()
    model.train(was_training)
    same = np.eye(len(pairs), dtype=bool)
    auroc = roc_auc_score(same.ravel(), similarity.ravel())
    return {"auroc": round(float(auroc), 4), "pairs": len(pairs),
            "same_patient_mean_cosine": round(float(similarity[same].mean()), 4),
            "other_patient_mean_cosine": round(float(similarity[~same].mean()), 4)}


def trainable_breakdown(model) -> dict:
    """Trainable parameters of an `AltaForPreTraining` by kind, with the count and share of the whole model."""
    kinds = dict.fromkeys(_KINDS, 0)
    trainable = total = 0
    for name, parameter in model.named_parameters():
        total += parameter.numel()
        if not parameter.requires_grad:
            continue
        trainable += parameter.numel()
        kind = next(kind for kind, pattern in _KINDS.items() if re.fullmatch(pattern, name))
        kinds[kind] += parameter.numel()
    return {"trainable": trainable, "total": total, "share": round(trainable / total, 4),
            "by_kind": {kind: count for kind, count in kinds.items() if count}}
