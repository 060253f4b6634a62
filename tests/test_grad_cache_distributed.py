"""Cached contrastive accumulation under DistributedDataParallel: two gloo processes, each with two micro-batches,
give the loss and gradient of one process with the whole batch (contrastive losses over all studies, reconstruction
and MLM means over all masked patches / labelled tokens), with `no_sync` on all but the last micro-batch."""

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from devtools.processes import gloo_process_group, run_ranks
from alta_hf.modeling_alta import AltaForPreTraining
from tests.factories import assert_close_to_scale, perturb_parameters_, tiny_alta_config, tiny_pretraining_batch
from alta_hf.training.grad_cache import cached_contrastive_step

WORLD_SIZE, PER_RANK, MICRO = 2, 4, 2


def _model():
    torch.manual_seed(0)
    config = tiny_alta_config(text_config={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    return perturb_parameters_(AltaForPreTraining(config)).train()


def _batch(config):
    batch = tiny_pretraining_batch(config, batch_size=WORLD_SIZE * PER_RANK, seed=4)
    batch["noise"] = torch.rand(WORLD_SIZE * PER_RANK, config.num_view_slots, config.num_patches,
                                generator=torch.Generator().manual_seed(5))
    return batch


def _rows(batch, start, size):
    return {key: value[start : start + size] for key, value in batch.items()}


def _worker(rank, init_file, out_dir):
    with gloo_process_group(rank, init_file, WORLD_SIZE):
        model = _model()
        ddp = DistributedDataParallel(model)
        batch = _batch(model.config)
        micro_batches = [_rows(batch, rank * PER_RANK + i * MICRO, MICRO) for i in range(PER_RANK // MICRO)]
        losses = cached_contrastive_step(ddp, micro_batches, no_sync=ddp.no_sync)
        grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
        torch.save({"losses": losses, "grads": grads}, f"{out_dir}/rank{rank}.pt")


@pytest.mark.timeout(400)
def test_two_processes_with_micro_batches_equal_one_process_with_the_whole_batch(tmp_path):
    model = _model()
    config = model.config
    batch = _batch(config)
    whole = model(**batch)
    per_rank = [model(**_rows(batch, rank * PER_RANK, PER_RANK), compute_contrastive_losses=False)
                for rank in range(WORLD_SIZE)]
    whole.loss.backward()
    # rank r's MLM value is its token sum over the mean token count per rank (losses_alta.masked_lm_loss)
    labelled = [(_rows(batch, rank * PER_RANK, PER_RANK)["mlm_labels"] != -100).sum() for rank in range(WORLD_SIZE)]
    expected_mlm = [per_rank[rank].mlm_loss.detach() * labelled[rank] * WORLD_SIZE / sum(labelled)
                    for rank in range(WORLD_SIZE)]
    assert not dist.is_initialized()

    run_ranks(_worker, (str(tmp_path / "init"), str(tmp_path)), WORLD_SIZE, timeout=300)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    for rank in range(WORLD_SIZE):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(result["losses"]["global_loss"], whole.global_loss.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(result["losses"]["local_loss"], whole.local_loss.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(result["losses"]["mlm_loss"], expected_mlm[rank], rtol=1e-5, atol=1e-6)
        assert set(result["grads"]) == trainable
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                # per tensor: each rank's micro-batches trim their reports to their own longest one
                assert_close_to_scale(result["grads"][name], parameter.grad, name)
