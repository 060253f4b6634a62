"""ALTA built from its pretrained parts: a synthetic `MRM.pth` in the documented layout (the docstring of
modeling_alta/convert_pretrained_towers.py: timm/MAE names, fused qkv, decoder, MRM's own report BERT) and the faithful tiny CXR-BERT folder. The converted
towers are checked against a plain-torch implementation of the timm ViT / MAE decoder / BERT forward on the same
tensors (adapters at identity, masking replayed in order)."""

import argparse
import json
import math
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForPreTraining, AutoProcessor

from alta_hf.modeling_alta.convert_original_alta import ConversionError
from alta_hf.modeling_alta.convert_pretrained_towers import build_from_pretrained_towers, main

TEXT_DIR = "BiomedVLP-CXR-BERT-specialized"
# tiny MRM geometry: 224 input, 16-px patches (14 x 14 grid), width 64 / 2 blocks / 4 heads; decoder 48 / 1 block /
# 3 heads; 448 target with 32-px patches (as MRM's super-resolution head)
WIDTH, DEPTH, HEADS, MLP = 64, 2, 4, 256
DEC_WIDTH, DEC_DEPTH, DEC_HEADS, DEC_MLP = 48, 1, 3, 192
PATCH, GRID, PRED = 16, 14, 32 * 32 * 3
HEAD_ARGS = {"vision_num_attention_heads": HEADS, "decoder_num_attention_heads": DEC_HEADS}


def _block(prefix: str, width: int, mlp: int, generator) -> dict:
    def randn(*shape, std=0.05):
        return torch.randn(*shape, generator=generator) * std

    return {
        f"{prefix}.norm1.weight": 1 + randn(width), f"{prefix}.norm1.bias": randn(width),
        f"{prefix}.attn.qkv.weight": randn(3 * width, width, std=0.2), f"{prefix}.attn.qkv.bias": randn(3 * width),
        f"{prefix}.attn.proj.weight": randn(width, width, std=0.2), f"{prefix}.attn.proj.bias": randn(width),
        f"{prefix}.norm2.weight": 1 + randn(width), f"{prefix}.norm2.bias": randn(width),
        f"{prefix}.mlp.fc1.weight": randn(mlp, width, std=0.2), f"{prefix}.mlp.fc1.bias": randn(mlp),
        f"{prefix}.mlp.fc2.weight": randn(width, mlp, std=0.1), f"{prefix}.mlp.fc2.bias": randn(width),
    }


def synthetic_mrm_state_dict(seed: int = 0, width: int = WIDTH, decoder: bool = True) -> dict:
    """An MRM `model` state dict of the tiny geometry, every tensor random (position tables included)."""
    generator = torch.Generator().manual_seed(seed)
    randn = lambda *shape, std=0.05: torch.randn(*shape, generator=generator) * std  # noqa: E731
    sd = {
        "cls_token": randn(1, 1, width), "pos_embed": randn(1, GRID * GRID + 1, width, std=0.2),
        "patch_embed.proj.weight": randn(width, 3, PATCH, PATCH), "patch_embed.proj.bias": randn(width),
        "norm.weight": 1 + randn(width), "norm.bias": randn(width),
    }
    for index in range(DEPTH):
        sd.update(_block(f"blocks.{index}", width, MLP, generator))
    if decoder:
        sd.update({
            "decoder_embed.weight": randn(DEC_WIDTH, width, std=0.2), "decoder_embed.bias": randn(DEC_WIDTH),
            "mask_token": randn(1, 1, DEC_WIDTH), "decoder_pos_embed": randn(1, GRID * GRID + 1, DEC_WIDTH, std=0.2),
            "decoder_norm.weight": 1 + randn(DEC_WIDTH), "decoder_norm.bias": randn(DEC_WIDTH),
            "decoder_pred.weight": randn(PRED, DEC_WIDTH, std=0.2), "decoder_pred.bias": randn(PRED),
        })
        for index in range(DEC_DEPTH):
            sd.update(_block(f"decoder_blocks.{index}", DEC_WIDTH, DEC_MLP, generator))
    # MRM's own report BERT and its image map: present in MRM.pth, ignored by ALTA
    sd.update({
        "bert_encoder.model.bert.embeddings.word_embeddings.weight": randn(300, 24),
        "bert_encoder.model.bert.embeddings.position_ids": torch.arange(100)[None],
        "bert_encoder.model.bert.encoder.layer.0.attention.self.query.weight": randn(24, 24),
        "bert_encoder.model.cls.predictions.bias": randn(300),
        "bert_mlp.weight": randn(24, width), "bert_mlp.bias": randn(24),
    })
    return sd


def save_mrm(path, state_dict, training_checkpoint: bool = False):
    """`MRM.pth` as MRM's `misc.save_model` writes it (training checkpoint) or stripped to `{'model': ...}`."""
    checkpoint = {"model": state_dict}
    if training_checkpoint:
        checkpoint.update(
            optimizer={"state": {}, "param_groups": [{"lr": 1.5e-4, "betas": (0.9, 0.95), "params": [0]}]},
            epoch=199, scaler={"scale": 65536.0},
            args=argparse.Namespace(mask_ratio=0.75, norm_pix_loss=True, batch_size=32, model="mae_vit_base_patch16"),
        )
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def mrm_state_dict():
    return synthetic_mrm_state_dict()


@pytest.fixture(scope="module")
def text_dir(golden_dir):
    return golden_dir / TEXT_DIR


@pytest.fixture(scope="module")
def text_weights(text_dir):
    return torch.load(text_dir / "pytorch_model.bin", weights_only=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory, mrm_state_dict, text_dir):
    path = save_mrm(tmp_path_factory.mktemp("mrm") / "MRM.pth", mrm_state_dict, training_checkpoint=True)
    return build_from_pretrained_towers(path, text_dir, **HEAD_ARGS)


# ----- plain-torch reference forwards ----------------------------------------------------------------------------
def _timm_blocks(sd, prefix, depth, heads, x, eps=1e-6):
    """timm `Block`s (pre-norm, fused qkv in (q, k, v) row order), as MAE/MRM run them."""
    batch, tokens, width = x.shape
    for index in range(depth):
        p = f"{prefix}.{index}."
        h = F.layer_norm(x, (width,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps)
        qkv = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(batch, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        attention = ((q @ k.transpose(-2, -1)) * (width // heads) ** -0.5).softmax(dim=-1)
        x = x + F.linear((attention @ v).transpose(1, 2).reshape(batch, tokens, width),
                         sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(x, (width,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps)
        x = x + F.linear(F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                         sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    return x


def mae_encoder(sd, pixels, keep: int):
    """MAE `forward_encoder` keeping the first `keep` patches (the masking of noise in increasing order)."""
    patches = F.conv2d(pixels, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH)
    x = patches.flatten(2).transpose(1, 2) + sd["pos_embed"][:, 1:]
    x = x[:, :keep]
    cls = (sd["cls_token"] + sd["pos_embed"][:, :1]).expand(x.shape[0], -1, -1)
    x = _timm_blocks(sd, "blocks", DEPTH, HEADS, torch.cat([cls, x], dim=1))
    return F.layer_norm(x, (x.shape[-1],), sd["norm.weight"], sd["norm.bias"], 1e-6)


def mae_decoder(sd, latent):
    """MAE `forward_decoder` for latents of the first patches in order (ids_restore = identity)."""
    x = F.linear(latent, sd["decoder_embed.weight"], sd["decoder_embed.bias"])
    masked = GRID * GRID + 1 - x.shape[1]
    x = torch.cat([x, sd["mask_token"].expand(x.shape[0], masked, -1)], dim=1) + sd["decoder_pos_embed"]
    x = _timm_blocks(sd, "decoder_blocks", DEC_DEPTH, DEC_HEADS, x)
    x = F.layer_norm(x, (DEC_WIDTH,), sd["decoder_norm.weight"], sd["decoder_norm.bias"], 1e-6)
    return F.linear(x, sd["decoder_pred.weight"], sd["decoder_pred.bias"])[:, 1:]


def bert_encoder(sd, config, input_ids, attention_mask):
    """BERT's forward (post-norm layers, erf GELU), token type 0."""
    width, heads, eps = config["hidden_size"], config["num_attention_heads"], config["layer_norm_eps"]
    p = "bert.embeddings."
    x = sd[p + "word_embeddings.weight"][input_ids] + sd[p + "position_embeddings.weight"][: input_ids.shape[1]]
    x = F.layer_norm(x + sd[p + "token_type_embeddings.weight"][0], (width,), sd[p + "LayerNorm.weight"],
                     sd[p + "LayerNorm.bias"], eps)
    bias = torch.zeros(attention_mask.shape).masked_fill(attention_mask == 0, -math.inf)[:, None, None, :]
    batch, length, _ = x.shape
    for index in range(config["num_hidden_layers"]):
        p = f"bert.encoder.layer.{index}."

        def split(name):
            y = F.linear(x, sd[p + f"attention.self.{name}.weight"], sd[p + f"attention.self.{name}.bias"])
            return y.reshape(batch, length, heads, width // heads).transpose(1, 2)

        scores = split("query") @ split("key").transpose(-2, -1) / math.sqrt(width // heads) + bias
        context = (scores.softmax(dim=-1) @ split("value")).transpose(1, 2).reshape(batch, length, width)
        attended = F.layer_norm(
            F.linear(context, sd[p + "attention.output.dense.weight"], sd[p + "attention.output.dense.bias"]) + x,
            (width,), sd[p + "attention.output.LayerNorm.weight"], sd[p + "attention.output.LayerNorm.bias"], eps)
        inner = F.gelu(F.linear(attended, sd[p + "intermediate.dense.weight"], sd[p + "intermediate.dense.bias"]))
        x = F.layer_norm(F.linear(inner, sd[p + "output.dense.weight"], sd[p + "output.dense.bias"]) + attended,
                         (width,), sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"], eps)
    return x


def mlm_head(sd, hidden, eps):
    p = "cls.predictions."
    h = F.gelu(F.linear(hidden, sd[p + "transform.dense.weight"], sd[p + "transform.dense.bias"]))
    h = F.layer_norm(h, (h.shape[-1],), sd[p + "transform.LayerNorm.weight"], sd[p + "transform.LayerNorm.bias"], eps)
    return h @ sd["bert.embeddings.word_embeddings.weight"].T + sd[p + "bias"]


def projection(sd, prefix, x):
    h = F.gelu(F.linear(x, sd[prefix + "dense_to_hidden.weight"], sd[prefix + "dense_to_hidden.bias"]))
    h = F.layer_norm(h, (h.shape[-1],), sd[prefix + "LayerNorm.weight"], sd[prefix + "LayerNorm.bias"], 1e-12)
    return F.linear(h, sd[prefix + "dense_to_output.weight"], sd[prefix + "dense_to_output.bias"])


def _close(ours, reference, what):
    error = (ours - reference).abs().max().item()
    assert error < 2e-5 * max(1.0, reference.abs().max().item()), f"{what}: max abs error {error:.2e}"


# ----- tests ------------------------------------------------------------------------------------------------------
def test_image_tower_and_decoder_equal_the_mae_forward(built, mrm_state_dict):
    model, _ = built
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _close(model.alta.vision_hidden_states(pixels), mae_encoder(mrm_state_dict, pixels, GRID * GRID),
               "unmasked encoder")
        # masking replayed in order: the first quarter of the patches is kept (mask ratio 0.75 from args)
        noise = torch.arange(GRID * GRID, dtype=torch.float32).expand(2, 1, -1)
        hidden, mask, ids_restore = model.encode_views(pixels[:, None], torch.ones(2, 1, dtype=torch.long), noise)
        keep = GRID * GRID // 4
        reference = mae_encoder(mrm_state_dict, pixels, keep)
        _close(hidden[:, 0], reference, "masked encoder")
        assert mask[0, 0, :keep].sum() == 0 and mask[0, 0, keep:].all()
        _close(model.decoder(hidden[:, 0], ids_restore[:, 0]).logits, mae_decoder(mrm_state_dict, reference),
               "decoder")


def test_text_tower_heads_and_projections_equal_the_bert_forward(built, text_weights, text_dir):
    model, _ = built
    config = json.loads((text_dir / "config.json").read_text())
    generator = torch.Generator().manual_seed(2)
    input_ids = torch.randint(5, config["vocab_size"], (2, 12), generator=generator)
    input_ids[:, 0] = 2
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 8:] = 0
    with torch.no_grad():
        hidden = model.alta.text_hidden_states(input_ids, attention_mask)
        reference = bert_encoder(text_weights, config, input_ids, attention_mask)
        _close(hidden, reference, "BERT")
        _close(model.mlm_head(hidden), mlm_head(text_weights, reference, config["layer_norm_eps"]), "MLM head")
        expected = projection(text_weights, "cls_projection_head.", reference[:, 0])
        _close(model.alta.get_text_features(input_ids, attention_mask).pooler_output, expected, "text projection")
        # the local projection starts as a copy of the global one (ALTA's initialisation)
        _close(model.alta.text_local_projection(reference[:, 0]), expected, "local text projection")
    assert model.mlm_head.predictions.decoder.weight is model.alta.text_model.embeddings.word_embeddings.weight


def test_alta_initialisation_of_everything_else(built):
    model, report = built
    alta = model.alta
    assert torch.all(alta.view_embedding == 0) and torch.all(alta.temporal_embedding == 0)
    assert torch.all(model.missing_view_token == 0)
    assert torch.allclose(alta.logit_scale, torch.tensor(math.log(1 / 0.07)))
    assert torch.allclose(alta.local_logit_scales, torch.full((3,), math.log(1 / 0.07)))
    ups = [p for n, p in model.named_parameters() if ".bottleneck_up." in n]
    assert ups and all(torch.all(p == 0) for p in ups)
    bound = math.sqrt(6 / (WIDTH + 64))  # xavier-uniform of image_to_text (64 -> 64)
    weight = model.image_to_text.weight
    assert weight.abs().max() <= bound and weight.std() > bound / 3 and torch.all(model.image_to_text.bias == 0)
    assert not weight.requires_grad and not model.decoder.decoder_layers[0].attention.q_proj.weight.requires_grad
    assert model.decoder.decoder_pred.weight.requires_grad and all(p.requires_grad for p in ups)
    # the report: MRM's BERT ignored by design, adapters etc. initialised, geometry from tensors and args
    assert sum("MRM's own report BERT" in reason for reason in report.ignored.values()) == 4
    assert "bert_mlp.weight" in report.ignored
    assert "image_to_text.weight" in report.initialised and "alta.visual_projection.dense_to_output.weight" in report.initialised
    assert not any(n.startswith(("decoder.", "alta.text_model.embeddings")) for n in report.initialised)
    vision = model.config.vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.decoder_hidden_size, vision.mask_ratio) == (64, 2, 48, 0.75)
    assert model.config.reconstruction_image_size == 448 and model.config.projection_dim == 128
    assert report.mrm_args["batch_size"] == 32


def test_fresh_parts_are_seeded(tmp_path, mrm_state_dict, text_dir):
    path = save_mrm(tmp_path / "MRM.pth", mrm_state_dict)
    state = torch.random.get_rng_state()
    a, _ = build_from_pretrained_towers(path, text_dir, **HEAD_ARGS, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state), "the caller's random state must not move"
    b, _ = build_from_pretrained_towers(path, text_dir, **HEAD_ARGS, seed=3)
    c, _ = build_from_pretrained_towers(path, text_dir, **HEAD_ARGS, seed=4)
    assert torch.equal(a.image_to_text.weight, b.image_to_text.weight)
    assert not torch.equal(a.image_to_text.weight, c.image_to_text.weight)


def test_missing_decoder_is_an_error(tmp_path, text_dir, mrm_state_dict):
    path = save_mrm(tmp_path / "encoder_only.pth", synthetic_mrm_state_dict(decoder=False))
    with pytest.raises(ConversionError, match=r"no complete reconstruction decoder.*decoder_blocks.0.attn.qkv.weight"):
        build_from_pretrained_towers(path, text_dir, **HEAD_ARGS)
    partial = {k: v for k, v in mrm_state_dict.items() if k not in ("decoder_norm.weight", "mask_token")}
    with pytest.raises(ConversionError, match=r"MRM.pth lacks \['decoder.decoder_norm.weight', 'decoder.mask_token'\]"):
        build_from_pretrained_towers(save_mrm(tmp_path / "MRM.pth", partial), text_dir, **HEAD_ARGS)


def test_unexpected_and_missing_keys_are_listed(tmp_path, text_dir, mrm_state_dict):
    extra = {**mrm_state_dict, "head.weight": torch.zeros(2, 64), "blocks.0.attn_adapter.D_fc1.weight": torch.zeros(16, 64)}
    with pytest.raises(ConversionError, match=r"2 unexpected key\(s\) in the MRM state dict.*"
                                              r"\['blocks.0.attn_adapter.D_fc1.weight', 'head.weight'\]"):
        build_from_pretrained_towers(save_mrm(tmp_path / "extra.pth", extra), text_dir, **HEAD_ARGS)
    partial = {k: v for k, v in mrm_state_dict.items() if k != "blocks.1.norm2.bias"}
    with pytest.raises(ConversionError, match=r"lacks \['alta.vision_model.layers.1.layernorm_after.bias'\]"):
        build_from_pretrained_towers(save_mrm(tmp_path / "partial.pth", partial), text_dir, **HEAD_ARGS)

    bert = tmp_path / "bert"
    shutil.copytree(text_dir, bert)
    weights = torch.load(bert / "pytorch_model.bin", weights_only=True)
    del weights["cls.predictions.transform.dense.bias"]
    weights["cls.extra.weight"] = torch.zeros(1)
    torch.save(weights, bert / "pytorch_model.bin")
    mrm = save_mrm(tmp_path / "MRM.pth", mrm_state_dict)
    with pytest.raises(ConversionError, match=r"unexpected key\(s\) in the text model's weights: \['cls.extra.weight'\]"):
        build_from_pretrained_towers(mrm, bert, **HEAD_ARGS)
    del weights["cls.extra.weight"]
    torch.save(weights, bert / "pytorch_model.bin")
    with pytest.raises(ConversionError, match=r"bert lacks \['mlm_head.predictions.transform.dense.bias'\]"):
        build_from_pretrained_towers(mrm, bert, **HEAD_ARGS)


class _RunsCode:
    """Unpickling this runs a shell command (what a malicious checkpoint would do)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_malicious_pickles_are_refused_and_never_run(tmp_path, text_dir, mrm_state_dict):
    marker = tmp_path / "pwned"
    evil = tmp_path / "MRM.pth"
    torch.save({"model": mrm_state_dict, "args": _RunsCode(f"touch {marker}")}, evil)
    with pytest.raises(ConversionError, match=r"MRM.pth: cannot be read with torch.load\(weights_only=True\).*system"):
        build_from_pretrained_towers(evil, text_dir, **HEAD_ARGS)
    bert = tmp_path / "bert"
    shutil.copytree(text_dir, bert)
    torch.save({"bert.embeddings.word_embeddings.weight": _RunsCode(f"touch {marker}")}, bert / "pytorch_model.bin")
    with pytest.raises(ConversionError, match=r"pytorch_model.bin: cannot be read with torch.load\(weights_only=True\)"):
        build_from_pretrained_towers(save_mrm(tmp_path / "good.pth", mrm_state_dict), bert, **HEAD_ARGS)
    assert not marker.exists(), "the pickled command ran"


def test_generic_bert_with_another_width_and_no_heads(tmp_path):
    """Any BERT stands in for CXR-BERT: a bare `BertModel` safetensors folder (pooler, no MLM or projection head),
    narrower than the image tower; the missing heads start fresh, the general image_to_text map bridges widths."""
    from transformers import BertConfig, BertModel, BertTokenizer

    bert_config = BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64)
    bert = BertModel(bert_config).eval()
    folder = tmp_path / "small-bert"
    bert.save_pretrained(folder)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(35)]
    BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    mrm = save_mrm(tmp_path / "MRM.pth", synthetic_mrm_state_dict(width=96))
    model, report = build_from_pretrained_towers(mrm, folder, vision_num_attention_heads=4, decoder_num_attention_heads=3,
                                                 config_overrides={"projection_dim": 16, "mlm_loss_weight": 0.5})
    assert model.image_to_text.weight.shape == (32, 96) and model.config.projection_dim == 16
    assert model.config.mlm_loss_weight == 0.5
    assert "alta.text_projection.dense_to_output.weight" in report.initialised
    assert "mlm_head.predictions.transform.dense.weight" in report.initialised
    assert sum("pooler" in reason for reason in report.ignored.values()) == 2
    input_ids = torch.tensor([[2, 7, 9, 3]])
    with torch.no_grad():
        expected = bert(input_ids).last_hidden_state
        assert torch.allclose(model.alta.text_hidden_states(input_ids), expected, atol=1e-5)


def test_cli_writes_a_folder_that_loads_and_trains(tmp_path, mrm_state_dict, text_dir, built):
    mrm = save_mrm(tmp_path / "MRM.pth", mrm_state_dict, training_checkpoint=True)
    out = tmp_path / "alta-init"
    code = main(["--mrm", str(mrm), "--cxr-bert", str(text_dir), "--output-dir", str(out),
                 "--vision-num-attention-heads", "4", "--decoder-num-attention-heads", "3",
                 "--config-overrides", '{"adapter_reduction_factor": 8}'])
    assert code == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "modeling_alta.py", "processor_config.json",
            "processing_alta.py"} <= set(os.listdir(out))
    # one command gives a complete folder: AutoProcessor finds the ALTA processor, not a bare tokenizer
    processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    assert type(processor).__name__ == "AltaProcessor" and processor.max_length == 128
    assert processor(images=torch.zeros(40, 50), text="no effusion")["pixel_values"].shape == (1, 3, 224, 224)
    loaded = AutoModelForPreTraining.from_pretrained(out, trust_remote_code=True)
    assert loaded.config.adapter_reduction_factor == 8
    reference, _ = built
    with torch.no_grad():
        pixels = torch.randn(1, 3, 224, 224)
        assert torch.equal(loaded.alta.vision_hidden_states(pixels), reference.alta.vision_hidden_states(pixels))
    assert loaded.trainable_parameter_counts()[0] < loaded.trainable_parameter_counts()[1] / 2

    bad = main(["--mrm", str(tmp_path / "none.pth"), "--cxr-bert", str(text_dir), "--output-dir", str(tmp_path / "x")])
    assert bad == 1 and not (tmp_path / "x").exists()
