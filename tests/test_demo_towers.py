"""The demo's first stage: `training.pretrain_demo_towers` writes towers that `convert_pretrained_towers` reads back
exactly, the committed `demo_towers/` match their metadata, and the demo's ALTA checks measure what they claim."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from alta_hf.dataset_scripts.demo import DemoOptions, build_demo_data
from alta_hf.modeling_alta.convert_original_alta import load_original_checkpoint
from alta_hf.modeling_alta.convert_pretrained_towers import build_from_pretrained_towers
from alta_hf.training.demo_checks import held_out_studies, temporal_consistency_auroc, trainable_breakdown
from alta_hf.training.demo_study import VARIANTS, markdown_table
from alta_hf.training.model_setup import set_trainable_policy
from alta_hf.training.pretrain_demo_towers import TEXT_FOLDER, file_record, main as pretrain

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMITTED = REPO_ROOT / "demo_towers"
TINY = DemoOptions(num_train_studies=8, num_validate_studies=6, num_eval_per_class=1, image_size=64, seed=5,
                   prior_fraction=1.0)


def _pretrain(data, out):
    return pretrain(["--data-dir", str(data), "--output-dir", str(out), "--batch-size", "4", "--max-steps", "3",
                     "--num-workers", "0"])


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    """(demo data where every held-out study has a prior, the pre-training output folder, its summary)."""
    data = tmp_path_factory.mktemp("demo") / "demo_data"
    build_demo_data(data, TINY, num_workers=1)
    out = tmp_path_factory.mktemp("towers")
    return data, out, _pretrain(data, out)


def test_pretrained_towers_convert_exactly(towers):
    _, out, summary = towers
    model, report = build_from_pretrained_towers(out / "MRM.pth", out / TEXT_FOLDER)
    assert summary["steps"] == 3 and summary["seed"] == 0
    assert set(report.ignored) == {"bert_mlp.weight", "bert_mlp.bias"}  # MRM's image->report map, unused by ALTA
    assert not any(name.startswith(("decoder.", "alta.vision_model.embeddings", "alta.text_model.embeddings"))
                   for name in report.initialised)
    vision = model.config.vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads, vision.image_size) == (128, 4, 2, 112)
    assert (vision.mask_ratio, model.config.reconstruction_image_size) == (0.75, 224)
    # the tensors are the written ones: fused qkv rows (q, k, v), the text tower's safetensors
    mrm, _ = load_original_checkpoint(out / "MRM.pth")
    attention = model.alta.vision_model.layers[1].attention
    fused = torch.cat([attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight])
    assert torch.equal(fused, mrm["blocks.1.attn.qkv.weight"])
    text = load_file(out / TEXT_FOLDER / "model.safetensors")
    assert torch.equal(model.alta.text_model.embeddings.word_embeddings.weight,
                       text["bert.embeddings.word_embeddings.weight"])
    assert 0 < summary["final_losses"]["reconstruction_loss"] < 10 and 0 < summary["final_losses"]["mlm_loss"] < 10


def test_pretraining_is_deterministic_and_metadata_lists_the_files(towers, tmp_path):
    data, out, summary = towers
    again = _pretrain(data, tmp_path)
    assert again["history"][-1]["reconstruction_loss"] == summary["history"][-1]["reconstruction_loss"]
    first, _ = load_original_checkpoint(out / "MRM.pth")
    second, _ = load_original_checkpoint(tmp_path / "MRM.pth")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    metadata = json.loads((out / "metadata.json").read_text())
    assert set(metadata["files"]) == {"MRM.pth", *(f"{TEXT_FOLDER}/{p.name}" for p in (out / TEXT_FOLDER).iterdir())}
    for name, record in metadata["files"].items():
        assert file_record(out / name) == record


def test_committed_demo_towers_match_their_metadata():
    metadata = json.loads((COMMITTED / "metadata.json").read_text())
    for key in ("command", "seed", "steps", "wall_seconds", "cpu", "final_losses"):
        assert key in metadata, key
    on_disk = {str(p.relative_to(COMMITTED)) for p in COMMITTED.rglob("*") if p.is_file()}
    assert set(metadata["files"]) == on_disk - {"metadata.json", "README.md"}
    for name, record in metadata["files"].items():
        assert file_record(COMMITTED / name) == record, name


def test_checks_measure_what_they_claim(towers):
    tiny_data, out, _ = towers
    model, _ = build_from_pretrained_towers(out / "MRM.pth", out / TEXT_FOLDER)
    breakdown = trainable_breakdown(model)
    assert (breakdown["trainable"], breakdown["total"]) == model.trainable_parameter_counts()
    assert sum(breakdown["by_kind"].values()) == breakdown["trainable"] and breakdown["by_kind"]["adapters"] > 0

    studies, image_root = held_out_studies(tiny_data / "pretrain")
    from alta_hf.processing import AltaImageProcessor, AltaProcessor
    from transformers import BertTokenizer

    processor = AltaProcessor(AltaImageProcessor(), BertTokenizer.from_pretrained(out / TEXT_FOLDER))

    class ByPatient(torch.nn.Module):
        """An 'embedding' that is the patient's index: same-patient pairs are the only similar ones."""

        def get_image_features(self, pixel_values):
            return SimpleNamespace(pooler_output=torch.eye(len(pixel_values)) + 0.01)

    result = temporal_consistency_auroc(ByPatient(), processor, studies, image_root)
    assert result["pairs"] == len(studies) and result["auroc"] == 1.0


def test_heads_policy_trains_only_the_projection_heads(towers):
    _, out, _ = towers
    model, _ = build_from_pretrained_towers(out / "MRM.pth", out / TEXT_FOLDER)
    set_trainable_policy(model, "heads")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".".join(name.split(".")[:2]) in {
        "alta.visual_projection", "alta.visual_local_projection", "alta.text_projection",
        "alta.text_local_projection", "alta.logit_scale", "alta.local_logit_scales"} for name in trainable)


def test_study_table_has_a_row_per_variant():
    summary = {"metrics": {"zero_shot/accuracy": 0.5, "image_to_text/precision_at_5": 0.25,
                           "text_to_image/precision_at_5": 0.125},
               "checks": {"trainable": {"trainable": 1000, "share": 0.1}},
               "seconds": {"training": 12.3}, "peak_memory_mib": 900.0}
    table = markdown_table({"alta": summary, "heads": summary}).splitlines()
    assert len(table) == 4 and table[2].startswith(f"| {VARIANTS['alta'][0]} | 0.500 | 0.250 | 0.125 | 1,000 (10.0 %)")


def test_towers_convert_with_lora_adapters_too(towers):
    """LoRA wraps other modules than the bottleneck adapters (q/v projections): the conversion follows the model."""
    from alta_hf.training.model_setup import _lora_overrides

    _, out, _ = towers
    bottleneck, _ = build_from_pretrained_towers(out / "MRM.pth", out / TEXT_FOLDER)
    lora, _ = build_from_pretrained_towers(out / "MRM.pth", out / TEXT_FOLDER,
                                           config_overrides=_lora_overrides(bottleneck.config))
    assert lora.config.adapter_type == "lora"
    pixels, ids = torch.randn(2, 3, 112, 112), torch.tensor([[2, 7, 9, 3]])
    with torch.no_grad():  # both adapters start at identity: the towers compute the same
        assert torch.allclose(lora.alta.vision_hidden_states(pixels), bottleneck.alta.vision_hidden_states(pixels),
                              atol=1e-5)
        assert torch.allclose(lora.alta.text_hidden_states(ids), bottleneck.alta.text_hidden_states(ids), atol=1e-5)


def test_whole_report_masking_masks_every_word_of_the_chosen_reports_only():
    from transformers import BertTokenizer

    from alta_hf.training.pretrain_demo_towers import mask_whole_reports

    tokenizer = BertTokenizer.from_pretrained(COMMITTED / TEXT_FOLDER)
    encoded = tokenizer(["the heart is enlarged.", "no pleural effusion.", "normal chest radiograph."] * 4,
                        padding="max_length", max_length=12, return_tensors="pt")
    ids, attention = encoded["input_ids"], encoded["attention_mask"]
    partly = ids.clone()
    partly[:, 1] = tokenizer.mask_token_id  # the processor's random masking: the first word of every report
    labels = torch.full_like(ids, -100)
    labels[:, 1] = ids[:, 1]
    inputs = {"input_ids": ids, "attention_mask": attention, "mlm_input_ids": partly.clone(), "mlm_labels": labels.clone()}
    mask_whole_reports(inputs, tokenizer, 0.5, torch.Generator().manual_seed(0))

    words = (attention == 1) & ~torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    whole = (inputs["mlm_input_ids"] == tokenizer.mask_token_id).sum(1) == words.sum(1)
    assert 0 < whole.sum() < len(ids)  # some reports, not all
    for row in range(len(ids)):
        if whole[row]:  # every word masked and labelled with itself; [CLS], [SEP] and padding untouched
            assert torch.equal(inputs["mlm_input_ids"][row][words[row]], torch.full((int(words[row].sum()),),
                                                                                      tokenizer.mask_token_id))
            assert torch.equal(inputs["mlm_labels"][row][words[row]], ids[row][words[row]])
            assert torch.equal(inputs["mlm_input_ids"][row][~words[row]], ids[row][~words[row]])
            assert (inputs["mlm_labels"][row][~words[row]] == -100).all()
        else:  # the processor's corruption is kept as it was
            assert torch.equal(inputs["mlm_input_ids"][row], partly[row])
            assert torch.equal(inputs["mlm_labels"][row], labels[row])
    again = {**inputs, "mlm_input_ids": partly.clone(), "mlm_labels": labels.clone()}
    mask_whole_reports(again, tokenizer, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(again["mlm_input_ids"], inputs["mlm_input_ids"])  # replayable from the seed


def test_pretraining_resumes_exactly(towers, tmp_path):
    data = towers[0]
    common = ["--data-dir", str(data), "--batch-size", "4", "--num-workers", "0", "--epochs", "2"]
    pretrain(common + ["--output-dir", str(tmp_path / "straight")])
    pretrain(common + ["--output-dir", str(tmp_path / "resumed"), "--max-steps", "2"])  # stops after epoch 1
    pretrain(common + ["--output-dir", str(tmp_path / "resumed"), "--resume"])
    straight, _ = load_original_checkpoint(tmp_path / "straight" / "MRM.pth")
    resumed, _ = load_original_checkpoint(tmp_path / "resumed" / "MRM.pth")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)
    text = [load_file(tmp_path / run / TEXT_FOLDER / "model.safetensors") for run in ("straight", "resumed")]
    assert all(torch.equal(text[0][key], text[1][key]) for key in text[0])
