"""How much the demo towers' features carry, before any ALTA training (benchmarks/RESULTS.md, "Why the demo does not
learn"):

    python -m benchmarks.probe_demo_towers --towers demo_towers --data demo_data

- spread of the features ALTA's global loss starts from: mean pairwise cosine and between-study share of the squared
  norm (1 - |mean|^2 / mean |x|^2) of the masked frontal [CLS], the four-slot pooled [CLS], the patch mean and the
  text [CLS], on 48 training studies;
- whether masked record modelling uses the image: the MLM loss with the pretrained image->report map (MRM's `bert_mlp`)
  and with the image offset removed;
- a linear probe (logistic regression on standardised unmasked frontal [CLS] + patch-mean features) fitted on the demo
  validation split, scored on the test split (chance 0.20);
- the class share of the variance (between-class over total sum of squares, on the validation split) of the unmasked
  frontal [CLS] (and of the [CLS] of the same images under the official training augmentation, and with 75 % of the
  patches masked, as ALTA's training sees them), the patch mean, the
  report [CLS] and, for reference, the image's own pixels at 28 x 28. A linear
  probe finds a class direction however faint; a contrastive loss starting from frozen features has to find it
  against everything else that varies, so this share is what tells whether ALTA's global loss can pick it up.
"""

import argparse
import json
import os
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def _spread(features: torch.Tensor) -> dict:
    normalised = F.normalize(features, dim=-1)
    off_diagonal = (normalised @ normalised.T)[~torch.eye(len(features), dtype=torch.bool)]
    centred = features - features.mean(0)
    return {"mean_cosine": round(off_diagonal.mean().item(), 4),
            "between_study_share": round((centred.pow(2).sum() / features.pow(2).sum()).item(), 4)}


@torch.no_grad()
def feature_spread_and_mlm(model, processor, data: Path) -> dict:
    from alta_hf.training.data import StudyDataset, TrainingCollator, load_pretraining_split

    rows, root, _ = load_pretraining_split(data / "pretrain", "train")
    dataset = StudyDataset(rows, processor, root, seed=0)
    batch = TrainingCollator()([dataset[i] for i in range(48)])
    inputs = {key: batch[key] for key in batch if key not in ("skipped_studies", "dropped_views")}
    output = model(**inputs, compute_contrastive_losses=False)
    vision, text = output.vision_last_hidden_state, output.text_last_hidden_state
    result = {
        "pooled_cls_4_slots": _spread(vision[:, :, 0].mean(1)),
        "frontal_cls_masked": _spread(vision[:, 0, 0]),
        "frontal_patch_mean_masked": _spread(vision[:, 0, 1:].mean(1)),
        "text_cls": _spread(text[:, 0]),
        "mlm_loss_with_image": round(output.mlm_loss.item(), 4),
    }
    model.image_to_text.weight.zero_()
    model.image_to_text.bias.zero_()
    result["mlm_loss_without_image"] = round(model(**inputs, compute_contrastive_losses=False).mlm_loss.item(), 4)
    return result


def class_share(features: np.ndarray, labels: np.ndarray) -> float:
    """Between-class sum of squares over the total (1: features are their class mean; 0: no class signal)."""
    centred = features - features.mean(0)
    means = np.stack([centred[labels == label].mean(0) for label in np.unique(labels)])
    index = np.searchsorted(np.unique(labels), labels)
    return round(float((means[index] ** 2).sum() / (centred ** 2).sum()), 4)


@torch.no_grad()
def class_shares(model, processor, data: Path) -> dict:
    import datasets
    from PIL import Image

    rows = datasets.load_from_disk(str(data / "eval"))["validation"]
    root = Path(json.loads((data / "eval" / "alta_dataset.json").read_text())["image_root"])
    labels = np.array(rows["label"])
    images = [Image.open(root / path).convert("RGB") for path in rows["image_path"]]
    pixel_values = torch.cat([processor(images=images[i:i + 50], return_tensors="pt")["pixel_values"]
                              for i in range(0, len(images), 50)])
    hidden = model.alta.vision_hidden_states(pixel_values)
    # as ALTA's training sees the frontal: 75 % of the patches masked (fixed noise), the other three slots absent
    slots = torch.zeros(len(images), model.config.num_view_slots, *pixel_values.shape[1:])
    slots[:, 0] = pixel_values
    view_mask = torch.zeros(len(images), model.config.num_view_slots, dtype=torch.long)
    view_mask[:, 0] = 1
    noise = torch.rand(*view_mask.shape, model.config.num_patches, generator=torch.Generator().manual_seed(0))
    masked_cls = model.encode_views(slots, view_mask, noise)[0][:, 0, 0]
    # the official training augmentation (configs/processor/demo.json: random affine, brightness/contrast), unmasked
    augmented = torch.stack([processor.image_processor.preprocess_study(
        image, generator=torch.Generator().manual_seed(i), augment=True)["pixel_values"][0] for i, image in enumerate(images)])
    augmented_cls = model.alta.vision_hidden_states(augmented)[:, 0]
    text = processor.tokenizer(list(rows["report"]), padding=True, truncation=True, max_length=128, return_tensors="pt")
    report_cls = model.alta.text_hidden_states(text["input_ids"], text["attention_mask"])[:, 0]
    pixels = np.stack([np.asarray(image.convert("L").resize((28, 28)), np.float32).ravel() for image in images])
    return {"frontal_cls": class_share(hidden[:, 0].numpy(), labels),
            "frontal_cls_augmented": class_share(augmented_cls.numpy(), labels),
            "frontal_cls_75pct_masked": class_share(masked_cls.numpy(), labels),
            "frontal_patch_mean": class_share(hidden[:, 1:].mean(1).numpy(), labels),
            "report_cls": class_share(report_cls.numpy(), labels),
            "pixels_28x28": class_share(pixels, labels)}


@torch.no_grad()
def linear_probe(model, processor, data: Path) -> float:
    import datasets
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    evalset = datasets.load_from_disk(str(data / "eval"))
    root = Path(json.loads((data / "eval" / "alta_dataset.json").read_text())["image_root"])

    def features(split):
        rows, chunks = evalset[split], []
        for start in range(0, len(rows), 50):
            images = [Image.open(root / path).convert("RGB") for path in rows[start:start + 50]["image_path"]]
            hidden = model.alta.vision_hidden_states(processor(images=images, return_tensors="pt")["pixel_values"])
            chunks.append(torch.cat([hidden[:, 0], hidden[:, 1:].mean(1)], 1).numpy())
        return np.concatenate(chunks), np.array(rows["label"])

    (train_x, train_y), (test_x, test_y) = features("validation"), features("test")
    scaler = StandardScaler().fit(train_x)
    probe = LogisticRegression(max_iter=2000).fit(scaler.transform(train_x), train_y)
    return round(float((probe.predict(scaler.transform(test_x)) == test_y).mean()), 4)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--towers", default="demo_towers")
    parser.add_argument("--data", default="demo_data")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from alta_hf.modeling_alta.convert_original_alta import load_original_checkpoint
    from alta_hf.modeling_alta.convert_pretrained_towers import build_from_pretrained_towers
    from alta_hf.training.model_setup import _processor

    towers, data = Path(args.towers), Path(args.data)
    model, _ = build_from_pretrained_towers(towers / "MRM.pth", towers / "cxr-bert-demo")
    mrm, _ = load_original_checkpoint(towers / "MRM.pth")
    with torch.no_grad():  # MRM's trained image->report map (the conversion gives ALTA a fresh one)
        model.image_to_text.weight.copy_(mrm["bert_mlp.weight"])
        model.image_to_text.bias.copy_(mrm["bert_mlp.bias"])
    processor = _processor(SimpleNamespace(processor_config=str(REPO_ROOT / "configs/processor/demo.json")),
                           towers / "cxr-bert-demo")
    result = {"linear_probe_accuracy": linear_probe(model.eval(), processor, data),
              "class_share_of_variance": class_shares(model, processor, data),
              **feature_spread_and_mlm(model, processor, data)}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
