"""The training forward that leaves out the work no loss reads (modeling_alta/step_work_alta.py) gives the losses
and gradients of the full-work path (the official code's work, golden parity), also on padded batches, absent
view slots, studies with the frontal view only and under bf16 autocast."""

import pytest
import torch

from alta_hf.modeling_alta import AltaForPreTraining
from alta_hf.modeling_alta.convert_original_alta import convert_checkpoint, convert_state_dict
from alta_hf.modeling_alta.step_work_alta import _cpu_has_native_bf16, labelled_rows, pad_to_length, used_text_length
from tests.factories import assert_close_to_scale, perturb_parameters_, tiny_alta_config, tiny_pretraining_batch
from tests.golden import assert_golden
from tests.test_convert_original_alta import HEADS, TEXT_DIR, _pretraining_inputs

LOSSES = ("loss", "global_loss", "local_loss", "reconstruction_loss", "mlm_loss")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # eval mode: dropout off, so that both paths see the same network (`full_work` is passed explicitly)
    return perturb_parameters_(AltaForPreTraining(tiny_alta_config())).eval()


def _padded_batch(config, extra_columns: int = 8) -> dict:
    """Three studies: all views; the frontal view only; current frontal + prior frontal. Reports of 16, 13 and
    10 tokens, then `extra_columns` columns of padding in every row (nothing to compute there)."""
    batch = tiny_pretraining_batch(config, batch_size=3, length=16, seed=3)
    batch["view_mask"][2] = torch.tensor([1, 0, 1, 0])
    batch["noise"] = torch.rand(3, config.num_view_slots, config.num_patches, generator=torch.Generator().manual_seed(4))
    for key, value in (("input_ids", 0), ("attention_mask", 0), ("mlm_input_ids", 0), ("mlm_labels", -100)):
        batch[key] = torch.cat([batch[key], torch.full((3, extra_columns), value)], dim=1)
    return batch


def _forward_backward(model, batch, **kwargs):
    model.zero_grad(set_to_none=True)
    output = model(**batch, **kwargs)
    output.loss.backward()
    return output, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _assert_same_step(ours, full):
    (output, grads), (full_output, full_grads) = ours, full
    for name in LOSSES:
        torch.testing.assert_close(getattr(output, name), getattr(full_output, name), rtol=1e-6, atol=1e-6)
    assert set(grads) == set(full_grads)
    for name, grad in full_grads.items():
        assert_close_to_scale(grads[name], grad, name)


def test_reduced_path_gives_the_full_work_losses_and_gradients(model):
    batch = _padded_batch(model.config)
    lengths = []
    text_hidden_states = model.alta.text_hidden_states

    def spy(input_ids, *args, **kwargs):
        lengths.append(input_ids.shape[1])
        return text_hidden_states(input_ids, *args, **kwargs)

    model.alta.text_hidden_states = spy
    try:
        ours = _forward_backward(model, batch, full_work=False)
        full = _forward_backward(model, batch, full_work=True)
    finally:
        del model.alta.text_hidden_states
    assert lengths == [16, 24]  # the trailing padding columns were left out, then computed by the full path
    _assert_same_step(ours, full)

    output, full_output = ours[0], full[0]
    for name in ("image_embeds", "text_embeds", "image_local_embeds", "local_logits_per_image", "reconstruction_logits"):
        torch.testing.assert_close(getattr(output, name), getattr(full_output, name), rtol=1e-5, atol=1e-6)
    labelled = batch["mlm_labels"] != -100
    torch.testing.assert_close(output.mlm_logits, full_output.mlm_logits[labelled], rtol=1e-5, atol=1e-5)
    real = batch["attention_mask"].bool()
    assert output.text_last_hidden_state.shape == full_output.text_last_hidden_state.shape
    torch.testing.assert_close(output.text_last_hidden_state[real], full_output.text_last_hidden_state[real])
    assert not output.text_last_hidden_state[:, 16:].any()
    torch.testing.assert_close(output.text_local_embeds[real[:, 1:]], full_output.text_local_embeds[real[:, 1:]])


def test_an_mlm_label_on_padding_keeps_its_column(model):
    batch = _padded_batch(model.config)
    batch["mlm_labels"][0, 20] = 7  # odd but legal: the full path computes this position
    _assert_same_step(_forward_backward(model, batch, full_work=False), _forward_backward(model, batch, full_work=True))


def test_training_mode_defaults_to_the_reduced_path_and_eval_mode_to_full_work(model):
    batch = _padded_batch(model.config)
    labelled = int((batch["mlm_labels"] != -100).sum())
    with torch.no_grad():
        assert model(**batch).mlm_logits.shape == (3, 24, model.config.text_config.vocab_size)
        model.train()
        try:
            assert model(**batch).mlm_logits.shape == (labelled, model.config.text_config.vocab_size)
        finally:
            model.eval()


def test_bf16_autocast_step_is_close_to_float32(model):
    batch = _padded_batch(model.config)
    full = _forward_backward(model, batch, full_work=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, grads = _forward_backward(model, batch, full_work=False)
    for name in LOSSES:
        value, expected = getattr(output, name), getattr(full[0], name)
        assert value.dtype == torch.float32, name
        assert abs(value.item() - expected.item()) <= 3e-2 * max(1.0, abs(expected.item())), name
    flat = torch.cat([grads[name].flatten() for name in sorted(grads)])
    expected = torch.cat([full[1][name].flatten() for name in sorted(grads)])
    assert torch.isfinite(flat).all()
    assert torch.nn.functional.cosine_similarity(flat, expected, dim=0) > 0.99


def test_reduced_path_matches_the_official_code_on_the_golden_inputs(golden_dir, golden_tensors):
    converted = convert_checkpoint(golden_dir / "ALTA_random.pth", golden_dir / TEXT_DIR, **HEADS).eval()
    output, grads = _forward_backward(converted, _pretraining_inputs(golden_tensors), full_work=False)
    outputs = golden_tensors["outputs"]
    for ours, golden in (("global_loss", "loss_global"), ("local_loss", "loss_local"),
                         ("reconstruction_loss", "loss_recon"), ("mlm_loss", "loss_mlm"), ("loss", "loss_total")):
        assert_golden(getattr(output, ours), outputs[golden], golden)
    labelled = golden_tensors["inputs"]["labels"] != -100
    assert_golden(output.mlm_logits, outputs["mlm_logits"][labelled], "mlm_logits")
    expected = convert_state_dict(golden_tensors["grads"])
    assert set(grads) == set(expected)
    for name, value in expected.items():
        assert_golden(grads[name], value, name)


def test_used_text_length():
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    assert used_text_length(mask) == 3
    labels = torch.full_like(mask, -100)
    labels[1, 4] = 5
    assert used_text_length(mask, labels) == 5
    assert used_text_length(torch.tensor([[0, 0, 1, 1]])) == 4  # left padding: nothing to trim
    assert used_text_length(torch.zeros(2, 4, dtype=torch.long)) == 1


def test_pad_to_length_and_labelled_rows():
    x = torch.arange(12.0).reshape(2, 3, 2)
    padded = pad_to_length(x, 5)
    assert padded.shape == (2, 5, 2) and torch.equal(padded[:, :3], x) and not padded[:, 3:].any()
    assert torch.equal(pad_to_length(torch.ones(2, 3, dtype=torch.long), 4), torch.tensor([[1, 1, 1, 0]] * 2))
    assert pad_to_length(x, 3) is x
    hidden, labels = labelled_rows(x, torch.tensor([[-100, 4, -100], [7, -100, -100]]))
    assert torch.equal(hidden, torch.stack([x[0, 1], x[1, 0]])) and labels.tolist() == [4, 7]


def test_native_bf16_detection_reads_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    for flags, native in (("fpu avx2 avx512f amx_bf16 amx_tile", True), ("fpu avx2 avx512f avx512_bf16", True),
                          ("fpu avx2 avx512f", False)):
        cpuinfo.write_text(f"flags\t\t: {flags}\n")
        assert _cpu_has_native_bf16(cpuinfo) == native, flags
    assert not _cpu_has_native_bf16(tmp_path / "missing")


def _saved_bytes_and_step(model, batch):
    """(bytes autograd saves for backward that are not parameters, the step's losses and gradients)."""
    parameters = {p.data_ptr() for p in model.parameters()}
    saved = []

    def pack(tensor):
        if tensor.data_ptr() not in parameters:
            saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step = _forward_backward(model, batch, full_work=False)
    return sum(saved), step


def test_frozen_linears_save_their_weight_not_its_autocast_copy(model):
    batch = _padded_batch(model.config)
    frozen = [m for m in model.modules() if type(m) is torch.nn.Linear and not m.weight.requires_grad]
    assert frozen and all("forward" in vars(m) for m in frozen)
    calls = []  # frozen matmuls whose input needs a gradient: plain autocast saves a bf16 copy of the weight for each
    hooks = [m.register_forward_pre_hook(lambda m, args: calls.append(m.weight.numel() * 2) if args[0].requires_grad
                                         else None) for m in frozen]
    try:
        saved, (output, grads) = _saved_bytes_and_step(model, batch)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls
    originals = {m: vars(m).pop("forward") for m in frozen}  # back to nn.Linear.forward: autocast casts and saves
    try:
        plain_saved, (plain_output, plain_grads) = _saved_bytes_and_step(model, batch)
    finally:
        for m, forward in originals.items():
            m.forward = forward
    assert plain_saved - saved == sum(calls)
    for name in LOSSES:
        assert torch.equal(getattr(output, name), getattr(plain_output, name)), name
    assert set(grads) == set(plain_grads)
    for name, grad in plain_grads.items():
        assert torch.equal(grads[name], grad), name
