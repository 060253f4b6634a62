"""Converter of the official ALTA checkpoint, and parity with the official code on the golden `tiny` fixtures:
every recorded intermediate and output, the four losses, the inference features and the gradients of every
trainable tensor, at the golden README's tolerance: per tensor, max |ours - golden| <= atol with
atol = 1e-4 * max(1, max |golden|) (rtol 0). The scale is the tensor's: the float32 rounding of a gradient is
relative to its largest entries (computed in float64, ours differs from the float32 golden gradient of
`text_local_projection.dense_to_hidden.weight` by 1.6e-4, where that tensor's entries reach 8)."""

import argparse
import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForPreTraining, BertTokenizer

from alta_hf.modeling_alta.convert_original_alta import (
    ConversionError,
    convert_checkpoint,
    convert_state_dict,
    load_original_checkpoint,
    main,
    map_original_key,
)
from alta_hf.modeling_alta.losses_alta import reconstruction_loss
from tests.golden import assert_golden

TEXT_DIR = "BiomedVLP-CXR-BERT-specialized"
HEADS = {"vision_num_attention_heads": 4, "decoder_num_attention_heads": 3}


@pytest.fixture(scope="module")
def golden(golden_dir, golden_tensors):
    return {
        **golden_tensors,
        "manifest": json.loads((golden_dir / "manifest.json").read_text()),
        "trainable": json.loads((golden_dir / "trainable_names.json").read_text()),
    }


@pytest.fixture(scope="module")
def converted(golden_dir):
    return convert_checkpoint(golden_dir / "ALTA_random.pth", golden_dir / TEXT_DIR, **HEADS)


def _pretraining_inputs(golden):
    inputs, outputs = golden["inputs"], golden["outputs"]
    batch = inputs["ids"].shape[0]
    return {
        # slot 0 is the (processor-made) 224 resize of the 448 target, recorded by the official code
        "pixel_values": torch.stack([outputs["img_224"], inputs["a_img"], inputs["l_img"], inputs["la_img"]], dim=1),
        "view_mask": inputs["presence"].long(),
        "target_pixel_values": inputs["img"],
        "input_ids": inputs["ids"],
        "attention_mask": inputs["attention_mask"],
        "mlm_input_ids": inputs["inputs"],
        "mlm_labels": inputs["labels"],
        # official noise rows are b * slots + t
        "noise": inputs["mask_noise"].unflatten(0, (batch, -1)),
    }


@pytest.fixture(scope="module")
def run(converted, golden):
    """One eval-mode forward + backward of the converted model on the recorded inputs, with hooks on the
    intermediates that are not outputs."""
    model = converted
    model.eval()
    model.zero_grad(set_to_none=True)
    recorded = {}

    def keep(name, from_input=False):
        def hook(module, args, output=None):
            recorded[name] = args[0] if from_input else output
        return hook

    alta = model.alta
    handles = [
        alta.vision_model.layers[0].register_forward_pre_hook(keep("enc_block0_input", from_input=True)),
        alta.visual_projection.register_forward_hook(keep("img_global_projected")),
        model.image_to_text.register_forward_hook(keep("img_feature_for_bert")),
        alta.text_projection.register_forward_hook(keep("txt_cls_projected")),
    ]
    output = model(**_pretraining_inputs(golden))
    for handle in handles:
        handle.remove()
    output.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return output, recorded, grads


def test_slot_zero_is_the_antialiased_bicubic_resize_of_the_target(golden):
    resized = F.interpolate(golden["inputs"]["img"], size=(224, 224), mode="bicubic", align_corners=False, antialias=True)
    assert_golden(resized, golden["outputs"]["img_224"], "img_224")


def test_intermediates_match_the_official_code(run, golden):
    output, recorded, _ = run
    outputs = golden["outputs"]
    hidden = output.vision_last_hidden_state
    ours = {
        **recorded,
        "enc_cls_embed": hidden[:, :, 0],
        "enc_others_embed": hidden[:, :, 1:].flatten(1, 2),
        "enc_latent": hidden[:, 0],
        "mask": output.mask,
        "ids_restore": output.ids_restore,
        "img_cls_mean": hidden[:, :, 0].mean(dim=1),
        "img_global_embed": output.image_embeds,
        "img_local_embed": output.image_local_embeds,
        "bert_img_feature_in": recorded["img_feature_for_bert"],
        "txt_last_hidden_state": output.text_last_hidden_state,
        "txt_global_embed": output.text_embeds,
        "txt_local_projected": output.text_local_embeds,
        "mlm_logits": output.mlm_logits,
        "decoder_pred": output.reconstruction_logits,
        "local_similarities": output.local_logits_per_image,
    }
    for name, value in ours.items():
        assert_golden(value, outputs[name], name)


def test_text_inputs_and_scales_match_the_official_code(converted, golden):
    inputs, outputs = golden["inputs"], golden["outputs"]
    # one text-tower call on [clean; corrupted]; a report's words = non-padding tokens after [CLS] (cap_lens)
    assert torch.equal(torch.cat([inputs["ids"], inputs["inputs"]]), outputs["bert_input_ids"])
    assert torch.equal(torch.cat([inputs["attention_mask"]] * 2), outputs["bert_attention_mask"])
    assert torch.equal(inputs["attention_mask"][:, 1:].sum(dim=1).repeat(2), outputs["cap_lens"])
    assert_golden(converted.alta.logit_scale.exp(), outputs["global_logit_scale_exp"], "global_logit_scale_exp")
    assert_golden(converted.alta.local_logit_scales.exp(), outputs["local_temps"], "local_temps")


def test_losses_match_the_official_code(run, golden):
    output, _, _ = run
    outputs = golden["outputs"]
    assert_golden(output.global_loss, outputs["loss_global"], "loss_global")
    assert_golden(output.local_loss, outputs["loss_local"], "loss_local")
    assert_golden(output.reconstruction_loss, outputs["loss_recon"], "loss_recon")
    assert_golden(output.mlm_loss, outputs["loss_mlm"], "loss_mlm")
    assert_golden(output.loss, outputs["loss_total"], "loss_total")
    no_norm_pix = reconstruction_loss(
        output.reconstruction_logits, golden["inputs"]["img"], output.mask, 32, norm_pix_loss=False
    )
    assert_golden(no_norm_pix, outputs["loss_recon_no_norm_pix"], "loss_recon_no_norm_pix")


def test_gradients_of_every_trainable_tensor_match(run, golden, converted):
    _, _, grads = run
    expected = convert_state_dict(golden["grads"])
    trainable = {name for name, p in converted.named_parameters() if p.requires_grad}
    assert set(expected) == trainable
    assert set(grads) == trainable  # and no frozen tensor received a gradient
    for name, value in expected.items():
        assert_golden(grads[name], value, name)


def test_trainable_set_equals_the_official_rule_through_the_key_map(converted, golden):
    ours = {name for name, p in converted.named_parameters() if p.requires_grad}
    official = {name for key in golden["trainable"]["trainable"] for name in map_original_key(key)}
    frozen = {name for key in golden["trainable"]["frozen"] for name in map_original_key(key)}
    assert ours == official
    assert {name for name, p in converted.named_parameters() if not p.requires_grad} == frozen


def test_inference_features_match(converted, golden):
    inputs, outputs = golden["inputs"], golden["outputs"]
    alta = converted.alta
    with torch.no_grad():
        image = alta.get_image_features(inputs["single_img"]).pooler_output
        text = alta.get_text_features(inputs["single_txt_input_ids"], inputs["single_txt_attention_mask"]).pooler_output
        classes = alta.get_text_features(
            inputs["class_txt_input_ids"].flatten(0, 1), inputs["class_txt_attention_mask"].flatten(0, 1)
        ).pooler_output.unflatten(0, inputs["class_txt_input_ids"].shape[:2])
    assert_golden(F.normalize(image, dim=-1), outputs["img_feature"], "img_feature")
    assert_golden(F.normalize(text, dim=-1), outputs["txt_feature_single"], "txt_feature_single")
    assert_golden(classes, outputs["txt_feature_classes"], "txt_feature_classes")
    assert_golden(F.normalize(classes, dim=-1), outputs["txt_feature_classes_normalized"], "txt_feature_classes_normalized")


def test_missing_token_and_image_to_text_map_are_carried(converted, golden_dir):
    official, _ = load_original_checkpoint(golden_dir / "ALTA_random.pth")
    assert official["missing_token"].dtype == torch.float16
    assert converted.missing_view_token.dtype == torch.float32
    assert torch.equal(converted.missing_view_token, official["missing_token"][0].float())
    assert torch.equal(converted.image_to_text.weight, official["bert_embed.weight"])


def test_cli_writes_a_folder_both_auto_classes_load(tmp_path, golden_dir, golden, converted):
    out = tmp_path / "alta-tiny"
    assert main([
        "--checkpoint", str(golden_dir / "ALTA_random.pth"), "--text-model-dir", str(golden_dir / TEXT_DIR),
        "--output-dir", str(out), "--vision-num-attention-heads", "4", "--decoder-num-attention-heads", "3",
    ]) == 0
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert [path.name for path in tmp_path.iterdir()] == ["alta-tiny"]  # no staging folder left behind
    assert set(json.loads((out / "config.json").read_text())["auto_map"]) == {
        "AutoConfig", "AutoModel", "AutoModelForPreTraining", "AutoModelForImageClassification"}

    pretraining = AutoModelForPreTraining.from_pretrained(out)
    expected = converted.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in pretraining.state_dict().items())
    model = AutoModel.from_pretrained(out)
    assert type(model).__name__ == "AltaModel"
    with torch.no_grad():
        image = F.normalize(model.get_image_features(golden["inputs"]["single_img"]).pooler_output, dim=-1)
    assert_golden(image, golden["outputs"]["img_feature"], "img_feature (AutoModel)")

    tokenizer = BertTokenizer.from_pretrained(out)
    assert tokenizer.model_max_length == 128 and len(tokenizer) == 200
    encoded = tokenizer(golden["manifest"]["texts"]["single_texts"], padding="max_length", truncation=True,
                        return_tensors="pt")
    assert torch.equal(encoded["input_ids"], golden["inputs"]["single_txt_input_ids"])


class _NotAllowed:
    pass


@pytest.fixture(scope="module")
def official_state_dict(golden_dir):
    return load_original_checkpoint(golden_dir / "ALTA_random.pth")[0]


def test_training_checkpoint_with_args_and_optimizer(tmp_path, golden_dir, official_state_dict):
    path = tmp_path / "checkpoint.pth"
    torch.save({
        "model": official_state_dict,
        "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(3)}},
                      "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.95), "weight_decay": 0.05, "params": [0]}]},
        "epoch": 29,
        "scaler": {"scale": 65536.0, "growth_factor": 2.0},
        "args": argparse.Namespace(mask_ratio=0.6, norm_pix_loss=False, batch_size=24, output_dir="out"),
    }, path)
    model = convert_checkpoint(path, golden_dir / TEXT_DIR, **HEADS)
    assert model.config.vision_config.mask_ratio == 0.6 and model.config.vision_config.norm_pix_loss is False

    bare = tmp_path / "bare.pth"
    torch.save(official_state_dict, bare)
    model = convert_checkpoint(bare, golden_dir / TEXT_DIR, **HEADS)
    assert torch.equal(model.alta.view_embedding, official_state_dict["view_embedding"][0])


def _convert_modified(tmp_path, golden_dir, state_dict, **kwargs):
    path = tmp_path / "modified.pth"
    torch.save({"model": state_dict}, path)
    return convert_checkpoint(path, golden_dir / TEXT_DIR, **{**HEADS, **kwargs})


def test_every_unmapped_key_is_listed(tmp_path, golden_dir, official_state_dict):
    extra = {**official_state_dict, "extra.weight": torch.zeros(2), "blocks.0.attn.extra": torch.zeros(1)}
    with pytest.raises(ConversionError, match=r"2 unmapped key\(s\): \['blocks.0.attn.extra', 'extra.weight'\]"):
        _convert_modified(tmp_path, golden_dir, extra)


def test_every_missing_key_is_listed(tmp_path, golden_dir, official_state_dict):
    partial = {k: v for k, v in official_state_dict.items() if k not in ("blocks.1.norm1.weight", "mask_token")}
    with pytest.raises(ConversionError, match=r"missing \['alta.vision_model.layers.1.layernorm_before.weight', "
                                              r"'decoder.mask_token'\]"):
        _convert_modified(tmp_path, golden_dir, partial)


def test_untied_mlm_decoder_is_rejected(tmp_path, golden_dir, official_state_dict):
    untied = dict(official_state_dict)
    untied["bert_encoder.cls.predictions.decoder.weight"] = untied["bert_encoder.cls.predictions.decoder.weight"] + 1
    with pytest.raises(ConversionError, match="differs from bert_encoder.bert.embeddings.word_embeddings.weight"):
        _convert_modified(tmp_path, golden_dir, untied)


def test_unsafe_pickles_are_refused(tmp_path, golden_dir, official_state_dict):
    path = tmp_path / "unsafe.pth"
    torch.save({"model": official_state_dict, "args": _NotAllowed()}, path)
    with pytest.raises(ConversionError, match=r"weights_only=True"):
        convert_checkpoint(path, golden_dir / TEXT_DIR, **HEADS)


def test_text_folder_must_match_the_checkpoint(tmp_path, golden_dir):
    text_dir = tmp_path / "bert"
    shutil.copytree(golden_dir / TEXT_DIR, text_dir)
    config = json.loads((text_dir / "config.json").read_text())
    (text_dir / "config.json").write_text(json.dumps({**config, "vocab_size": 300}))
    with pytest.raises(ConversionError, match=r"vocab 300 x hidden 64.*\[200, 64\]"):
        convert_checkpoint(golden_dir / "ALTA_random.pth", text_dir, **HEADS)


def test_head_counts_must_divide_the_widths(golden_dir):
    with pytest.raises(ConversionError, match="decoder: 5 attention heads do not divide the width 48"):
        convert_checkpoint(golden_dir / "ALTA_random.pth", golden_dir / TEXT_DIR, vision_num_attention_heads=4,
                           decoder_num_attention_heads=5)


def test_cli_reports_errors_without_writing(tmp_path, golden_dir, capsys):
    out = tmp_path / "out"
    code = main(["--checkpoint", str(tmp_path / "missing.pth"), "--text-model-dir", str(golden_dir / TEXT_DIR),
                 "--output-dir", str(out)])
    assert code == 1
    assert "missing.pth: checkpoint file not found" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []
