"""The ALTA losses against the official code's recorded values and against a literal per-report loop."""

import math

import pytest
import torch
from torch import nn

from devtools.reference_losses import reference_local_loss, reference_local_similarities
from alta_hf.modeling_alta.losses_alta import (
    clamp_logit_scales_,
    gather_with_grad,
    global_contrastive_loss,
    local_contrastive_loss,
    masked_lm_loss,
    patchify,
    reconstruction_loss,
    word_region_attention,
)
from tests.golden import assert_golden


@pytest.fixture(scope="module")
def golden_values(golden_tensors):
    return {**golden_tensors["inputs"], **golden_tensors["outputs"]}


def word_mask(lengths: torch.Tensor, max_words: int) -> torch.Tensor:
    return torch.arange(max_words) < lengths[:, None]


def random_local_batch(lengths, regions=7, max_words=9, dim=5, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    image_local = torch.randn(len(lengths), regions, dim, generator=generator, dtype=dtype)
    text_local = torch.randn(len(lengths), max_words, dim, generator=generator, dtype=dtype)
    log_temperatures = torch.tensor([4.0, 5.0, 10.0], dtype=dtype).log()
    temperatures = log_temperatures + 0.3 * torch.randn(3, generator=generator, dtype=dtype)
    return image_local, text_local, lengths, temperatures.exp()


# ---------------------------------------------------------------------------------------------------------------
# Golden values of the official code (tiny configuration, world size 1)
# ---------------------------------------------------------------------------------------------------------------


def test_global_loss_matches_golden(golden_values):
    loss = global_contrastive_loss(
        golden_values["img_global_embed"], golden_values["txt_global_embed"], golden_values["global_logit_scale_exp"]
    )
    assert_golden(loss, golden_values["loss_global"])


def test_local_loss_and_similarities_match_golden(golden_values):
    max_words = golden_values["txt_local_projected"].shape[1]
    batch = golden_values["txt_local_projected"].shape[0]
    mask = word_mask(golden_values["cap_lens"][:batch], max_words)
    # What the model passes (attention_mask without [CLS]) is exactly the official cap_lens, the truncated
    # 127-word report included.
    assert torch.equal(golden_values["attention_mask"][:, 1:].bool(), mask)
    loss, similarities = local_contrastive_loss(
        golden_values["img_local_embed"], golden_values["txt_local_projected"], mask, golden_values["local_temps"], return_similarities=True
    )
    assert_golden(similarities, golden_values["local_similarities"])
    assert_golden(loss, golden_values["loss_local"])


def test_reconstruction_losses_match_golden(golden_values):
    patch_size = golden_values["img"].shape[-1] // math.isqrt(golden_values["mask"].shape[1])
    loss = reconstruction_loss(golden_values["decoder_pred"], golden_values["img"], golden_values["mask"], patch_size)
    assert_golden(loss, golden_values["loss_recon"])
    assert_golden(
        reconstruction_loss(golden_values["decoder_pred"], golden_values["img"], golden_values["mask"], patch_size, norm_pix_loss=False),
        golden_values["loss_recon_no_norm_pix"],
    )


def test_masked_lm_loss_matches_golden(golden_values):
    assert_golden(masked_lm_loss(golden_values["mlm_logits"], golden_values["labels"]), golden_values["loss_mlm"])


def test_nothing_is_gathered_without_a_process_group():
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x


def test_reference_loop_matches_golden(golden_values):
    """The tests' reference itself reproduces the official similarities, so agreeing with it means something."""
    batch = golden_values["txt_local_projected"].shape[0]
    similarities = reference_local_similarities(
        golden_values["img_local_embed"], golden_values["txt_local_projected"], golden_values["cap_lens"][:batch], golden_values["local_temps"]
    )
    assert_golden(similarities, golden_values["local_similarities"])


# ---------------------------------------------------------------------------------------------------------------
# Batched local loss == the per-report loop
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_batched_local_loss_equals_reference_loop(dtype, tolerance):
    # varied lengths: a full-length report, a one-word report, and everything between
    image_local, text_local, lengths, temperatures = random_local_batch([9, 1, 4, 7, 2, 9, 5], dtype=dtype)
    mask = word_mask(lengths, text_local.shape[1])
    leaves = [t.clone().requires_grad_() for t in (image_local, text_local, temperatures)]
    loss, similarities = local_contrastive_loss(leaves[0], leaves[1], mask, leaves[2], return_similarities=True)
    loss.backward()
    reference_leaves = [t.clone().requires_grad_() for t in (image_local, text_local, temperatures)]
    reference_similarities = reference_local_similarities(*reference_leaves[:2], lengths, reference_leaves[2])
    reference_loss = reference_local_loss(*reference_leaves[:2], lengths, reference_leaves[2])
    reference_loss.backward()

    scale = reference_similarities.abs().max()
    assert (similarities - reference_similarities).abs().max() <= tolerance * scale
    assert abs(loss.item() - reference_loss.item()) <= tolerance * max(1.0, abs(reference_loss.item()))
    for leaf, reference_leaf in zip(leaves, reference_leaves):
        # padding words get no gradient, as in the loop where they are never read
        assert (leaf.grad - reference_leaf.grad).abs().max() <= tolerance * reference_leaf.grad.abs().max() * 10
    assert (leaves[1].grad[~mask] == 0).all()
    assert leaves[2].grad.abs().min() > 0  # all three temperatures are used


def test_local_loss_gradcheck():
    image_local, text_local, lengths, temperatures = random_local_batch([3, 1, 2], regions=3, max_words=3, dim=2)
    mask = word_mask(lengths, 3)
    inputs = tuple(t.requires_grad_() for t in (image_local, text_local, temperatures))
    assert torch.autograd.gradcheck(lambda i, t, s: local_contrastive_loss(i, t, mask, s), inputs)


def test_local_loss_accepts_words_anywhere_in_the_mask():
    """The mask is a set of positions, not only a prefix: gaps give the loss of the compacted report."""
    image_local, text_local, lengths, temperatures = random_local_batch([5, 3, 4])
    mask = word_mask(lengths, text_local.shape[1])
    gappy_text = torch.zeros_like(text_local)
    gappy_mask = torch.zeros_like(mask)
    for i, n in enumerate(lengths.tolist()):
        positions = torch.arange(n) * 2  # words at even positions, 9 slots hold up to 5 of them
        gappy_text[i, positions] = text_local[i, :n]
        gappy_mask[i, positions] = True
    expected = local_contrastive_loss(image_local, text_local, mask, temperatures)
    gappy = local_contrastive_loss(image_local, gappy_text, gappy_mask, temperatures)
    assert torch.allclose(gappy, expected, atol=1e-12)


def test_local_loss_is_finite_where_the_official_formula_overflows():
    # Words nearly parallel to every region make each word's context nearly parallel to it: cos ~ 1, and with
    # t2 = 100 (the clamp's upper bound) exp(t2 * cos) > 3.4e38 overflows float32 in the official formula.
    generator = torch.Generator().manual_seed(1)
    direction = torch.randn(6, generator=generator)
    image_local = direction + 0.05 * torch.randn(3, 5, 6, generator=generator)
    text_local = direction + 0.05 * torch.randn(3, 4, 6, generator=generator)
    lengths = torch.tensor([4, 2, 3])
    temperatures = torch.tensor([4.0, 100.0, 1.0])
    assert torch.isinf(reference_local_similarities(image_local, text_local, lengths, temperatures)).any()

    leaves = [t.clone().requires_grad_() for t in (image_local, text_local, temperatures)]
    loss, similarities = local_contrastive_loss(
        leaves[0], leaves[1], word_mask(lengths, 4), leaves[2], return_similarities=True
    )
    loss.backward()
    expected = reference_local_similarities(image_local.double(), text_local.double(), lengths, temperatures.double())
    assert torch.isfinite(similarities).all() and similarities.min() > 88.7
    assert torch.allclose(similarities.double(), expected, rtol=1e-6, atol=0)
    assert torch.allclose(loss.double(), reference_local_loss(image_local.double(), text_local.double(), lengths,
                                                             temperatures.double()), rtol=1e-4)
    assert all(torch.isfinite(leaf.grad).all() for leaf in leaves)


def test_local_loss_computes_half_precision_in_float32():
    image_local, text_local, lengths, temperatures = random_local_batch([4, 2, 3], dtype=torch.float32)
    mask = word_mask(lengths, text_local.shape[1])
    image_local, text_local = image_local.bfloat16(), text_local.bfloat16()
    loss = local_contrastive_loss(image_local, text_local, mask, temperatures)
    assert loss.dtype == torch.float32
    expected = local_contrastive_loss(image_local.float(), text_local.float(), mask, temperatures)
    assert torch.allclose(loss, expected, rtol=1e-6)


def test_backpropagating_twice_gives_the_same_gradient():
    """backward() must not consume the saved buffers (retain_graph=True, gradcheck, torch.autograd.grad)."""
    image_local, text_local, lengths, temperatures = random_local_batch([2, 3])
    image_local.requires_grad_()
    loss = local_contrastive_loss(image_local, text_local, word_mask(lengths, 9), temperatures)
    (first,) = torch.autograd.grad(loss, image_local, retain_graph=True)
    (second,) = torch.autograd.grad(loss, image_local)
    assert torch.equal(first, second)


def test_word_region_attention_equals_the_loss_internal_maps():
    image_local, text_local, lengths, temperatures = random_local_batch([9, 1, 4, 6])
    mask = word_mask(lengths, text_local.shape[1])
    attention = word_region_attention(image_local, text_local, temperatures[0], text_mask=mask)
    _, reference_maps = reference_local_similarities(
        image_local, text_local, lengths, temperatures, return_attention=True
    )
    assert attention.shape == (4, 9, 7)
    for i, reference in enumerate(reference_maps):
        n = int(lengths[i])
        assert torch.allclose(attention[i, :n], reference, atol=1e-12)
        assert (attention[i, n:] == 0).all()
    assert torch.allclose(attention[mask].sum(-1), torch.ones(int(lengths.sum()), dtype=attention.dtype))
    # without a mask every position counts as a word
    full = word_region_attention(image_local, text_local, temperatures[0])
    assert torch.allclose(full[0], attention[0], atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Reconstruction, MLM, logit scales
# ---------------------------------------------------------------------------------------------------------------


def test_patchify_order_is_row_major_patches_of_row_col_channel():
    batch, channels, height, width, p = 2, 3, 4, 6, 2
    image = torch.arange(batch * channels * height * width, dtype=torch.float32).reshape(batch, channels, height, width)
    patches = patchify(image, p)
    assert patches.shape == (batch, (height // p) * (width // p), p * p * channels)
    for b in range(batch):
        for patch_row in range(height // p):
            for patch_col in range(width // p):
                index = patch_row * (width // p) + patch_col
                for row in range(p):
                    for col in range(p):
                        for c in range(channels):
                            value = image[b, c, patch_row * p + row, patch_col * p + col]
                            assert patches[b, index, (row * p + col) * channels + c] == value


def test_reconstruction_loss_rejects_bad_sizes():
    with pytest.raises(ValueError, match="450x448 is not divisible by the patch size 32"):
        reconstruction_loss(torch.zeros(1, 196, 3072), torch.zeros(1, 3, 450, 448), torch.ones(1, 196), 32)
    with pytest.raises(ValueError, match="does not match the patchified target"):
        reconstruction_loss(torch.zeros(1, 196, 768), torch.zeros(1, 3, 448, 448), torch.ones(1, 196), 32)
    with pytest.raises(ValueError, match="mask shape"):
        reconstruction_loss(torch.zeros(1, 4, 12), torch.zeros(1, 3, 4, 4), torch.ones(1, 5), 2)


def test_reconstruction_loss_semantics():
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(2, 3, 4, 4, generator=generator)
    pred = torch.randn(2, 4, 12, generator=generator)
    mask = torch.tensor([[1.0, 0, 0, 1], [0, 0, 1, 0]])
    patches = patchify(target, 2)
    normed = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, unbiased=True, keepdim=True) + 1e-6).sqrt()
    errors = ((pred - normed) ** 2).mean(-1)
    assert torch.allclose(reconstruction_loss(pred, target, mask, 2), errors[mask.bool()].mean())
    # no masked patch: 0 (not 0 / 0)
    assert reconstruction_loss(pred, target, torch.zeros(2, 4), 2).item() == 0.0


def test_masked_lm_loss_semantics():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=generator, requires_grad=True)
    labels = torch.full((2, 5), -100)
    labels[0, 1], labels[1, 3], labels[1, 4] = 3, 7, 0
    picked = logits[labels != -100]
    expected = torch.nn.functional.cross_entropy(picked, labels[labels != -100])
    assert torch.allclose(masked_lm_loss(logits, labels), expected)
    # nothing labelled (a short report whose corruption chose no token): 0 with a zero gradient, not NaN
    empty = masked_lm_loss(logits, torch.full((2, 5), -100))
    empty.backward()
    assert empty.item() == 0.0 and (logits.grad == 0).all()


def test_clamp_logit_scales_finds_the_parameters_by_name():
    class Towers(nn.Module):
        def __init__(self):
            super().__init__()
            self.logit_scale = nn.Parameter(torch.tensor(7.0))
            self.local_logit_scales = nn.Parameter(torch.tensor([-0.5, 2.0, 10.0]))
            self.other = nn.Parameter(torch.tensor([-3.0, 9.0]))

    model = nn.Sequential(nn.Linear(2, 2), Towers())
    model[1].logit_scale.grad = torch.ones(())  # clamping must not disturb autograd state
    clamp_logit_scales_(model)
    assert model[1].logit_scale.item() == pytest.approx(math.log(100.0))
    assert torch.allclose(model[1].local_logit_scales, torch.tensor([0.0, 2.0, math.log(100.0)]))
    assert torch.equal(model[1].other, torch.tensor([-3.0, 9.0]))
    assert model[1].logit_scale.requires_grad and model[1].logit_scale.grad is not None
    clamp_logit_scales_(model, max_value=1.0)
    assert model[1].logit_scale.item() == 1.0
