"""The four ALTA losses and the one place where features cross process boundaries.

- `global_contrastive_loss`: symmetric InfoNCE between the normalised global image and report embeddings.
- `local_contrastive_loss`: GLoRIA-style word-region loss, batched over every (image, report) pair.
- `reconstruction_loss`: MAE-style masked-patch reconstruction with per-patch normalised targets.
- `masked_lm_loss`: cross-entropy of the image-conditioned masked-language-model head.

All functions take and return tensors and follow the device of their inputs. The contrastive and reconstruction
losses are computed in at least float32 (half-precision inputs are upcast), as the official code's softmax, exp and
MSE ran in float32 under fp16 autocast.

Multi-process training: when `torch.distributed` is initialised with more than one process, the two contrastive
losses gather the features of every rank with `gather_with_grad` and compute the loss over the global batch on every
rank (open_clip's `gather_with_grad=True, local_loss=False`). Combined with DDP's gradient averaging this gives exactly
the gradient of a single process holding the whole batch. Reconstruction and MLM stay per-rank means. In a single
process nothing is gathered and no process group is needed.
"""

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

try:
    import torch.distributed as dist
except ImportError:  # torch builds without distributed support
    dist = None


__all__ = [
    "clamp_logit_scales_",
    "gather_with_grad",
    "global_contrastive_loss",
    "local_contrastive_loss",
    "masked_lm_loss",
    "patchify",
    "reconstruction_loss",
    "word_region_attention",
]

# cosine(word, context) = dot / max(|word| * |context|, eps), as GLoRIA's and the official code's cosine.
_COSINE_EPS = 1e-8
# Added to the per-patch variance before the square root in the norm-pix target (MAE's constant).
_NORM_PIX_EPS = 1e-6
# Attribute names of the logit-scale parameters on the model (fixed by the loss contract).
_LOGIT_SCALE_NAMES = ("logit_scale", "local_logit_scales")


# --------------------------------------------------------------------------------------------------------------
# Gathering across processes
# --------------------------------------------------------------------------------------------------------------


def _world_size() -> int:
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each rank the summed gradient of its own rows.

    Every rank computes the same loss over the gathered batch, so rank k's graph only sees how the loss depends on
    the rows that came from rank k through its local copy; summing the incoming gradients over ranks and keeping
    this rank's slice gives world_size x d(loss)/d(local rows), which DDP's averaging turns back into the
    single-process gradient. (`torch.distributed.nn.functional.all_gather` does the same but is deprecated.)
    """

    @staticmethod
    def forward(ctx, tensor):
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        # all_reduce works in place: never modify a gradient buffer autograd may still hold.
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        rows = grad.shape[0] // dist.get_world_size()
        start = dist.get_rank() * rows
        return grad[start : start + rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` ([b, ...] on every rank) along dim 0 over all ranks, in rank order, keeping gradients.

    Identity when `torch.distributed` is not initialised or the world size is 1. Every rank must pass the same shape
    (equal per-rank batches, a fixed text length); tensors that need no gradient (masks) may be gathered too.
    """
    if _world_size() == 1:
        return x
    return _AllGatherWithGrad.apply(x)


# --------------------------------------------------------------------------------------------------------------
# Contrastive losses
# --------------------------------------------------------------------------------------------------------------


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def _symmetric_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(CE(rows) + CE(columns)) / 2 with the matching pairs on the diagonal."""
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def global_contrastive_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE over the (gathered) batch.

    Args:
        image_embeds (`torch.Tensor` of shape `(batch_size, projection_dim)`): L2-normalised image embeddings.
        text_embeds (`torch.Tensor` of shape `(batch_size, projection_dim)`): L2-normalised report embeddings.
        logit_scale (`torch.Tensor`, scalar): the multiplier, i.e. `exp` of the stored log-scale parameter.

    Returns:
        `torch.Tensor` (scalar): `(CE(S, arange) + CE(S.T, arange)) / 2` with `S = logit_scale * image @ text.T`.
    """
    dtype = _compute_dtype(image_embeds, text_embeds)
    image_embeds = gather_with_grad(image_embeds).to(dtype)
    text_embeds = gather_with_grad(text_embeds).to(dtype)
    logits = logit_scale.to(dtype) * image_embeds @ text_embeds.T
    return _symmetric_cross_entropy(logits)


def _segment_sum(x: torch.Tensor, word_to_text: torch.Tensor, num_texts: int) -> torch.Tensor:
    """[i, n, r] -> [i, num_texts, r]: sum over the words of each report (dim 1)."""
    return x.new_zeros((x.shape[0], num_texts, x.shape[2])).index_add_(1, word_to_text, x)


def _segment_max(x: torch.Tensor, word_to_text: torch.Tensor, num_texts: int) -> torch.Tensor:
    """[i, n, r] -> [i, num_texts, r]: max over the words of each report (dim 1)."""
    # scatter_reduce would need the index expanded to the full [i, n, r] shape (2x slower); index_reduce takes it 1-D
    # but warns once per process that its API is in beta.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="index_reduce", category=UserWarning)
        return x.new_full((x.shape[0], num_texts, x.shape[2]), -math.inf).index_reduce_(1, word_to_text, x, "amax")


class _WordContextCosine(torch.autograd.Function):
    """cos[i, n]: cosine between word n and its attention-weighted context over the regions of image i.

    For every image i and word n (words of all reports packed, `word_to_text[n]` = their report):
        scores  = words @ regions[i].T                          [n, r]
        p_words = softmax over the words of each report         (GLoRIA's first normalisation)
        p_regs  = softmax over regions of t1 * p_words
        context = p_regs @ regions[i]                           [n, d]
        cos     = <word, context> / max(|word| |context|, eps)

    Autograd through these ops would allocate a fresh [images, words, regions] tensor for nearly every step and
    keep most of them for backward. This Function works in place on four such buffers (two saved for backward),
    which on CPU makes it about as fast as the official per-report loop instead of twice as slow, and saves
    memory on any device. The backward is the chain rule of the lines above, with the softmax backward
    g_in = p * (g_out - sum(p * g_out)) over the softmax dimension; it leaves the saved buffers intact, so
    backpropagating twice (retain_graph, gradcheck) works.
    """

    @staticmethod
    def forward(ctx, regions, words, word_to_text, num_texts, t1):
        with torch.autocast(regions.device.type, enabled=False):
            scores = torch.bmm(words.expand(regions.shape[0], -1, -1), regions.mT)  # [i, n, r]
            scratch = torch.index_select(_segment_max(scores, word_to_text, num_texts), 1, word_to_text)
            p_words = scores.sub_(scratch).exp_()
            torch.index_select(_segment_sum(p_words, word_to_text, num_texts), 1, word_to_text, out=scratch)
            p_words.div_(scratch)
            p_regions = torch.mul(p_words, t1, out=scratch)
            p_regions.sub_(p_regions.amax(-1, keepdim=True)).exp_()
            p_regions.div_(p_regions.sum(-1, keepdim=True))
            context = torch.bmm(p_regions, regions)  # [i, n, d]
            dot = torch.einsum("ind,nd->in", context, words)  # no [i, n, d] temporary, unlike (context * words)
            context_norm = torch.linalg.vector_norm(context, dim=-1)
            word_norm = torch.linalg.vector_norm(words, dim=-1)
            norm_product = context_norm * word_norm
            cos = dot / norm_product.clamp_min(_COSINE_EPS)
        ctx.save_for_backward(
            regions, words, word_to_text, t1, p_words, p_regions, context, context_norm, word_norm, cos
        )
        ctx.num_texts = num_texts
        return cos

    @staticmethod
    def backward(ctx, grad_cos):
        regions, words, word_to_text, t1, p_words, p_regions, context, context_norm, word_norm, cos = ctx.saved_tensors
        with torch.autocast(regions.device.type, enabled=False):
            norm_product = context_norm * word_norm
            clamped = norm_product <= _COSINE_EPS
            denominator = norm_product.clamp_min(_COSINE_EPS)
            grad_dot = grad_cos / denominator
            # d cos / d |.| vanishes where the clamp is active; where() also keeps 0/0 out of zero-norm rows.
            grad_product = torch.where(clamped, 0.0, -grad_cos * cos / denominator)
            grad_word_norm = torch.where(word_norm > 0, (grad_product * context_norm).sum(0) / word_norm, 0.0)
            grad_words = torch.einsum("in,ind->nd", grad_dot, context) + grad_word_norm.unsqueeze(-1) * words
            coef = torch.where(clamped, 0.0, grad_product * word_norm / context_norm)
            grad_context = (context * coef.unsqueeze(-1)).addcmul_(grad_dot.unsqueeze(-1), words)
            grad_regions = torch.bmm(p_regions.mT, grad_context)

            # the gradient of the scores is built in place in two fresh buffers, the saved ones stay untouched
            grad_scores = torch.bmm(grad_context, regions.mT)  # d/d p_regions
            grad_scores.mul_(p_regions)
            grad_scores.addcmul_(p_regions, grad_scores.sum(-1, keepdim=True), value=-1)  # d/d (t1 * p_words)
            grad_scores.mul_(p_words)
            # a cascaded sum: torch.dot accumulates 1e8 float32 products with visible rounding error
            grad_t1 = grad_scores.sum().reshape(t1.shape) if ctx.needs_input_grad[4] else None
            expanded = torch.index_select(_segment_sum(grad_scores, word_to_text, ctx.num_texts), 1, word_to_text)
            grad_scores.sub_(expanded.mul_(p_words)).mul_(t1)  # d/d scores, through the softmax over words

            grad_regions += torch.bmm(grad_scores.mT, words.expand(regions.shape[0], -1, -1))
            grad_words += torch.bmm(grad_scores, regions, out=grad_context).sum(0)
        return grad_regions, grad_words, None, None, grad_t1


def _local_scores(image_local, text_local, text_mask, t1, t2):
    """[images, reports]: log(sum over the words of report j of exp(t2 * cos(word, its context in image i)))."""
    dtype = _compute_dtype(image_local, text_local)
    num_images = image_local.shape[0]
    num_texts, max_words = text_mask.shape
    words = text_local[text_mask].to(dtype)  # [n, d], report-major
    word_to_text = text_mask.nonzero()[:, 0]
    cos = _WordContextCosine.apply(image_local.to(dtype), words, word_to_text, num_texts, t1.to(dtype))
    # Back to [images, reports, words] with -inf at padding, so logsumexp sums exactly the report's words.
    # The official code evaluates log(sum(exp(.))) literally and overflows once t2 * cos > 88.7 in float32;
    # logsumexp is the same value wherever that one is finite.
    padded = cos.new_full((num_images, num_texts, max_words), -math.inf)
    padded = padded.masked_scatter(text_mask.expand(num_images, -1, -1), t2.to(dtype) * cos)
    return torch.logsumexp(padded, dim=-1)


def local_contrastive_loss(
    image_local: torch.Tensor,
    text_local: torch.Tensor,
    text_mask: torch.Tensor,
    temperatures: torch.Tensor,
    return_similarities: bool = False,
):
    """GLoRIA-style local contrastive loss over the (gathered) batch, batched over every image-report pair.

    For report j (its words w) and image i (its regions c): every region spreads attention over the report's
    words (softmax over words), every word then attends over the regions with that attention sharpened by t1
    (softmax over regions), and the attended context is compared with the word by cosine similarity.
    `S[i, j] = t3 * log(sum_w exp(t2 * cos_w))` (a plain sum over words, as the official code); the loss is the
    symmetric cross-entropy of S.

    Args:
        image_local (`torch.Tensor` of shape `(batch_size, num_regions, projection_dim)`): local image features.
        text_local (`torch.Tensor` of shape `(batch_size, max_words, projection_dim)`): local word features.
        text_mask (`torch.Tensor` of shape `(batch_size, max_words)`): 1/True where `text_local` holds a word (the
            model passes `attention_mask[:, 1:]`: every token after [CLS], [SEP] included). Every report needs at
            least one word.
        temperatures (`torch.Tensor` of shape `(3,)`): `(t1, t2, t3)`, `exp` of the three local log-scales.
        return_similarities (`bool`, *optional*, defaults to `False`): also return S.

    Returns:
        `torch.Tensor` (scalar), or `(loss, S)` with S of shape `(num_images, num_reports)` (rows = images) over
        the gathered batch when `return_similarities=True`.
    """
    image_local = gather_with_grad(image_local)
    text_local = gather_with_grad(text_local)
    text_mask = gather_with_grad(text_mask).bool()
    t1, t2, t3 = temperatures.unbind(0)
    similarities = t3 * _local_scores(image_local, text_local, text_mask, t1, t2)
    loss = _symmetric_cross_entropy(similarities)
    return (loss, similarities) if return_similarities else loss


def word_region_attention(
    image_local: torch.Tensor, text_local: torch.Tensor, t1: torch.Tensor, text_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Attention of each word of a report over the regions of ITS OWN image, as used inside the local loss.

    Args:
        image_local (`torch.Tensor` of shape `(batch_size, num_regions, projection_dim)`)
        text_local (`torch.Tensor` of shape `(batch_size, max_words, projection_dim)`)
        t1 (`torch.Tensor`, scalar): the first local temperature.
        text_mask (`torch.Tensor` of shape `(batch_size, max_words)`, *optional*): words to use (default: all);
            the rows of the other positions are zero.

    Returns:
        `torch.Tensor` of shape `(batch_size, max_words, num_regions)`: each word's row sums to 1 over the regions.
    """
    scores = text_local @ image_local.mT  # [b, w, r]
    if text_mask is not None:
        text_mask = text_mask.bool().unsqueeze(-1)
        scores = scores.masked_fill(~text_mask, -math.inf)
    attention = torch.softmax(t1 * torch.softmax(scores, dim=1), dim=2)
    if text_mask is not None:
        attention = attention * text_mask
    return attention


# --------------------------------------------------------------------------------------------------------------
# Reconstruction and masked language modelling
# --------------------------------------------------------------------------------------------------------------


def patchify(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """`(B, C, H, W)` -> `(B, (H / p) * (W / p), p * p * C)`: patches row-major, each flattened (row, col, channel).

    Raises:
        ValueError: if H or W is not divisible by `patch_size`.
    """
    batch_size, channels, height, width = pixel_values.shape
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image size {height}x{width} is not divisible by the patch size {patch_size}; "
            f"resize the reconstruction target to a multiple of {patch_size}"
        )
    rows, cols = height // patch_size, width // patch_size
    patches = pixel_values.reshape(batch_size, channels, rows, patch_size, cols, patch_size)
    patches = patches.permute(0, 2, 4, 3, 5, 1)  # (b, c, h, p, w, q) -> (b, h, w, p, q, c), MAE's order
    return patches.reshape(batch_size, rows * cols, patch_size * patch_size * channels)


def reconstruction_loss(
    pred: torch.Tensor,
    target_pixel_values: torch.Tensor,
    mask: torch.Tensor,
    patch_size: int,
    norm_pix_loss: bool = True,
) -> torch.Tensor:
    """MSE between predicted and target patches, averaged over the removed (masked) patches.

    Args:
        pred (`torch.Tensor` of shape `(batch_size, num_patches, patch_size**2 * channels)`): decoder output.
        target_pixel_values (`torch.Tensor` of shape `(batch_size, channels, height, width)`): the image to rebuild.
        mask (`torch.Tensor` of shape `(batch_size, num_patches)`): 1 for removed patches, 0 for visible ones.
        patch_size (`int`): side of a target patch in pixels.
        norm_pix_loss (`bool`, *optional*, defaults to `True`): normalise each target patch to zero mean and unit
            variance first, `(x - mean) / sqrt(var + 1e-6)` with the unbiased variance (as the official code).

    Returns:
        `torch.Tensor` (scalar). 0 when no patch is masked (the official code divides 0 by 0).

    Raises:
        ValueError: if the image size is not divisible by `patch_size` or the shapes do not match.
    """
    dtype = _compute_dtype(pred, target_pixel_values)
    target = patchify(target_pixel_values.to(dtype), patch_size)
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction shape {tuple(pred.shape)} does not match the patchified target {tuple(target.shape)} "
            f"(image {tuple(target_pixel_values.shape)}, patch size {patch_size})"
        )
    if mask.shape != pred.shape[:2]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match (batch, patches) = {tuple(pred.shape[:2])}")
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)  # unbiased (N - 1), as the official code
        target = (target - mean) / (var + _NORM_PIX_EPS).sqrt()
    per_patch = (pred.to(dtype) - target).pow(2).mean(dim=-1)
    mask = mask.to(dtype)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1)


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled tokens (labels != -100) of the whole batch.

    Args:
        logits (`torch.Tensor` of shape `(batch_size, seq_len, vocab_size)`)
        labels (`torch.Tensor` of shape `(batch_size, seq_len)`): token ids, -100 where nothing is predicted.

    Returns:
        `torch.Tensor` (scalar): the mean over labelled tokens; 0 when there is none (the official code: NaN).
        Under `torch.distributed`, the sum of this rank's tokens over the mean count per rank: ranks mask different
        numbers of tokens, and DDP's gradient average then equals the gradient of the mean over the global batch's
        tokens (the official code averages per-rank means, which weights the tokens of sparsely masked ranks more).
    """
    labels = labels.reshape(-1)
    total = F.cross_entropy(logits.reshape(labels.shape[0], -1), labels, ignore_index=-100, reduction="sum")
    count = (labels != -100).sum().to(total.dtype)
    world_size = _world_size()
    if world_size > 1:
        count = count.detach().clone()
        dist.all_reduce(count)
        count = count / world_size
    return total / count.clamp_min(1)


# --------------------------------------------------------------------------------------------------------------
# Logit scales
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def clamp_logit_scales_(module: nn.Module, max_value: float = math.log(100.0)) -> None:
    """Clamp every logit-scale parameter (`logit_scale`, `local_logit_scales`) of `module` to [0, max_value], in place.

    The official training loop does this after every optimiser step; the forward pass never clamps. Parameters are
    found by attribute name on `module` and all its submodules, so wrapped models (DDP, PEFT) work too.
    """
    for submodule in module.modules():
        for name in _LOGIT_SCALE_NAMES:
            parameter = getattr(submodule, name, None)
            if isinstance(parameter, nn.Parameter):
                parameter.clamp_(0.0, max_value)
