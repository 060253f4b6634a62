"""Two gloo processes under DistributedDataParallel give the loss and gradients of one process with the whole batch.

Each rank holds half of a batch whose features come from a small linear layer shared by both "towers"; the global
and local losses gather the features with gradients, DDP averages the parameter gradients, and the result must
equal a single process computing the same losses on the full batch.
"""

import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from devtools.processes import gloo_process_group, run_ranks
from alta_hf.modeling_alta.losses_alta import gather_with_grad, global_contrastive_loss, local_contrastive_loss

WORLD_SIZE = 2
PER_RANK = 3
REGIONS, MAX_WORDS, IN_DIM, DIM = 5, 6, 7, 4
WORD_COUNTS = [6, 1, 3, 4, 2, 5]  # rank 0 gets the first three reports (a full one, a one-word one), rank 1 the rest


class SharedFeatures(nn.Module):
    """One linear layer produces every feature, so each gradient entry mixes contributions of all samples."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(IN_DIM, DIM)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.local_logit_scales = nn.Parameter(torch.tensor([4.0, 5.0, 10.0]).log())

    def forward(self, image_tokens, text_tokens):
        image, text = self.proj(image_tokens), self.proj(text_tokens)
        return F.normalize(image[:, 0], dim=-1), F.normalize(text[:, 0], dim=-1), image[:, 1:], text[:, 1:]


def make_batch():
    generator = torch.Generator().manual_seed(0)
    batch = WORLD_SIZE * PER_RANK
    image_tokens = torch.randn(batch, 1 + REGIONS, IN_DIM, generator=generator)
    text_tokens = torch.randn(batch, 1 + MAX_WORDS, IN_DIM, generator=generator)
    mask = torch.arange(MAX_WORDS) < torch.tensor(WORD_COUNTS)[:, None]
    return image_tokens, text_tokens, mask


def make_model():
    torch.manual_seed(0)
    return SharedFeatures()


def losses(model, scales_owner, image_tokens, text_tokens, mask):
    image_global, text_global, image_local, text_local = model(image_tokens, text_tokens)
    global_loss = global_contrastive_loss(image_global, text_global, scales_owner.logit_scale.exp())
    local_loss, similarities = local_contrastive_loss(
        image_local, text_local, mask, scales_owner.local_logit_scales.exp(), return_similarities=True
    )
    return global_loss + local_loss, similarities


def _worker(rank, init_file, out_dir):
    with gloo_process_group(rank, init_file, WORLD_SIZE):
        model = make_model()
        ddp = DistributedDataParallel(model)
        image_tokens, text_tokens, mask = make_batch()
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        loss, similarities = losses(ddp, model, image_tokens[rows], text_tokens[rows], mask[rows])
        loss.backward()

        # gather_with_grad on its own: rank order, and the backward rule (sum over ranks, own slice)
        x = torch.full((2, 3), float(rank), requires_grad=True)
        gathered = gather_with_grad(x)
        weights = torch.arange(gathered.numel(), dtype=torch.float32).reshape(gathered.shape)
        (gathered * weights).sum().backward()

        torch.save(
            {
                "loss": loss.detach(),
                "similarities": similarities.detach(),
                "grads": {name: p.grad for name, p in model.named_parameters()},
                "gathered": gathered.detach(),
                "gather_grad": x.grad,
            },
            f"{out_dir}/rank{rank}.pt",
        )


@pytest.mark.timeout(300)
def test_two_gloo_processes_with_ddp_equal_one_process_with_the_full_batch(tmp_path):
    model = make_model()
    loss, similarities = losses(model, model, *make_batch())
    loss.backward()
    assert not dist.is_initialized()  # the reference really ran without any gathering

    run_ranks(_worker, (str(tmp_path / "init"), str(tmp_path)), WORLD_SIZE, timeout=240)
    results = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]

    for result in results:
        assert torch.allclose(result["loss"], loss.detach(), rtol=1e-6, atol=1e-6)
        assert torch.allclose(result["similarities"], similarities.detach(), rtol=1e-6, atol=1e-5)
        for name, parameter in model.named_parameters():
            assert torch.allclose(result["grads"][name], parameter.grad, rtol=1e-5, atol=1e-6), name
        expected = torch.cat([torch.full((2, 3), float(rank)) for rank in range(WORLD_SIZE)])
        assert torch.equal(result["gathered"], expected)
    weights = torch.arange(WORLD_SIZE * 6, dtype=torch.float32).reshape(WORLD_SIZE * 2, 3)
    for rank, result in enumerate(results):
        assert torch.equal(result["gather_grad"], WORLD_SIZE * weights[2 * rank : 2 * rank + 2])
