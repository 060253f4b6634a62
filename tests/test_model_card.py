"""Model cards: licence logic, model-index metadata from evaluation results, secrets, parameter counts."""

import json

import pytest
import torch
from huggingface_hub import ModelCard

from alta_hf.evaluation.model_card import OFFICIAL_LICENSE, PHYSIONET_LICENSE, build_model_card, count_parameters
from tests import eval_stand_ins as stand_ins

ALTA_CONFIG = {
    "model_type": "alta",
    "projection_dim": 128,
    "vision_config": {"model_type": "vit_mae", "num_hidden_layers": 12, "hidden_size": 768, "image_size": 224, "patch_size": 16},
    "text_config": {"model_type": "bert", "num_hidden_layers": 12, "hidden_size": 768},
}
COUNTS = {"trainable": 16_000_000, "total": 200_000_000}
RSNA_RESULT = {"task": "rsna", "split": "test", "metrics": {"roc_auc": 0.871234, "accuracy": 0.8424, "f1": 0.7654},
               "images": {"evaluated": 3000, "skipped": 0}}
CHEXPERT_RESULT = {"task": "chexpert_5x200", "split": "test",
                   "metrics": {"image_to_text/precision_at_5": 0.5, "zero_shot/accuracy": 0.6, "zero_shot/macro_f1": 0.55}}


@pytest.fixture
def alta_dir(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(ALTA_CONFIG))
    return tmp_path


def test_official_weights_are_cc_by_nc_and_mention_physionet(alta_dir):
    card = build_model_card(alta_dir, official_weights=True, parameter_counts=COUNTS, repo_id="me/alta")
    assert card.data.license == OFFICIAL_LICENSE
    assert "CC BY-NC 4.0" in card.text and "PhysioNet" in card.text
    assert card.data.base_model == ["microsoft/BiomedVLP-CXR-BERT-specialized"]
    assert card.data.datasets == ["mimic-cxr-jpg"]


def test_mimic_training_gives_the_physionet_licence(alta_dir):
    card = build_model_card(alta_dir, training_args={"data_dir": "/data/mimic-cxr-jpg/alta", "learning_rate": 5.625e-05},
                            parameter_counts=COUNTS)
    assert (card.data.license, card.data.license_name, card.data.license_link) == (
        PHYSIONET_LICENSE["license"], PHYSIONET_LICENSE["license_name"], PHYSIONET_LICENSE["license_link"])
    assert "credentialed" in card.text and "Credentialed Health Data License 1.5.0" in card.text


def test_demo_and_explicit_licences(alta_dir):
    demo = build_model_card(alta_dir, training_data="demo", parameter_counts=COUNTS)
    assert demo.data.license == "other" and "No licence was set" in demo.text and demo.data.datasets is None
    chosen = build_model_card(alta_dir, training_data="demo", license="apache-2.0", parameter_counts=COUNTS)
    assert chosen.data.license == "apache-2.0"


def test_model_index_round_trip(alta_dir, tmp_path):
    card = build_model_card(alta_dir, [RSNA_RESULT, CHEXPERT_RESULT], parameter_counts=COUNTS, repo_id="me/alta-mimic",
                            evaluation_figures=[["evaluation/rsna/roc_curve.png"], []], loss_curves="loss_curves.png")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    results = {(r.dataset_type, r.metric_type): r for r in loaded.data.eval_results}
    assert results[("rsna-pneumonia", "roc_auc")].metric_value == pytest.approx(0.871234)
    assert results[("rsna-pneumonia", "f1")].task_type == "zero-shot-image-classification"
    assert results[("chexpert-5x200", "precision_at_5")].task_name == "Image-to-text retrieval"
    assert results[("chexpert-5x200", "macro_f1")].dataset_split == "test"
    assert len(loaded.data.eval_results) == 6
    assert loaded.data.model_name == "alta-mimic" and loaded.data.pipeline_tag == "zero-shot-image-classification"
    text = loaded.text
    assert "![roc curve](evaluation/rsna/roc_curve.png)" in text and "![training curves](loss_curves.png)" in text
    assert "| `roc_auc` | 0.8712 |" in text


def test_card_content_usage_limitations_and_counts(alta_dir):
    card = build_model_card(alta_dir, parameter_counts=COUNTS, repo_id="me/alta")
    text = card.text
    assert "**Not for clinical use.**" in text
    assert 'AutoModel.from_pretrained("me/alta", trust_remote_code=True)' in text
    assert 'AutoProcessor.from_pretrained("me/alta", trust_remote_code=True)' in text
    assert "There is no pneumonia" in text and "softmax" in text
    assert "| 16,000,000 | 200,000,000 | 8.0% |" in text
    assert "ViTMAE (12 layers, hidden size 768, 224 px input, patch 16)" in text


def test_secrets_never_reach_the_card(alta_dir):
    args = {"hub_token": "hf_sEcReT", "wandb_api_key": "k3y", "learning_rate": 1e-4, "output_dir": "out"}
    card = build_model_card(alta_dir, training_args=args, parameter_counts=COUNTS)
    assert "hf_sEcReT" not in str(card) and "k3y" not in str(card)
    assert "| `learning_rate` | `0.0001` |" in card.text


def test_count_parameters_and_counts_from_a_folder(tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    module[1].requires_grad_(False)
    assert count_parameters(module) == {"trainable": 8, "total": 14}

    folder = stand_ins.save_tiny_clip(tmp_path / "clip")
    from transformers import AutoModel

    expected = sum(p.numel() for p in AutoModel.from_pretrained(folder).parameters())
    card = build_model_card(folder)
    assert f"| {expected:,} | {expected:,} | 100.0% |" in card.text
    assert card.data.base_model is None  # not an ALTA config: no default base model


def test_mismatched_figures_and_missing_config(tmp_path, alta_dir):
    with pytest.raises(ValueError, match="figure lists"):
        build_model_card(alta_dir, [RSNA_RESULT], parameter_counts=COUNTS, evaluation_figures=[])
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_model_card(tmp_path / "empty", parameter_counts=COUNTS)
