"""Step accounting when an epoch is no whole number of accumulation groups (training/loop.py: the last partial group
is dropped), for plain and for cached accumulation: the optimizer steps, the schedule's end, validation and the
checkpoint at the end of the last epoch, and exact resume at the partial group."""

import json
import signal

import pytest
import torch

from tests.training_setup import assert_bitwise_equal, run_train_py, tiny_train_arguments

# 48 studies at batch 4 = 12 micro-batches per epoch, in groups of 5: 2 updates and 2 dropped micro-batches per epoch
REMAINDER = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 5, "num_train_epochs": 2,
             "schedule_epochs": 2, "warmup_epochs": 1, "checkpointing_steps": 1, "checkpoints_total_limit": 3,
             "validation_task": "demo", "validation_split": "validation"}
PATHS = {"plain": {}, "cached": {"cached_contrastive_accumulation": True}}
UPDATES = 4


def remainder_arguments(tiny_demo, root, path: str) -> list[str]:
    return tiny_train_arguments(tiny_demo, root / "configs", root / "run", validation_data=tiny_demo / "eval",
                                **REMAINDER, **PATHS[path])


@pytest.fixture(scope="module", params=list(PATHS))
def uninterrupted(request, tiny_demo, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"remainder_{request.param}")
    result = run_train_py(remainder_arguments(tiny_demo, root, request.param))
    assert result.returncode == 0, result.stderr[-3000:]
    return request.param, root / "run", result.stderr


def _checkpoint(run_dir, step: int):
    return run_dir / "checkpoints" / f"checkpoint_{step}"


def test_every_update_uses_one_whole_group_and_the_schedule_ends_with_the_last(uninterrupted):
    _, run_dir, log = uninterrupted
    assert "2 updates per epoch, 4 updates" in log
    last = _checkpoint(run_dir, UPDATES)
    optimizer = torch.load(last / "optimizer.bin", weights_only=True)
    assert {int(state["step"]) for state in optimizer["state"].values()} == {UPDATES}
    scheduler = torch.load(last / "scheduler.bin", weights_only=True)
    assert scheduler["last_epoch"] == UPDATES
    # the cosine schedule was planned over exactly these updates: it ends at 0
    assert scheduler["_last_lr"] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert not _checkpoint(run_dir, UPDATES + 1).exists()


def test_the_last_epoch_ends_with_its_validation_and_checkpoint(uninterrupted):
    _, run_dir, log = uninterrupted
    assert "epoch 1: validation" in log and "epoch 2: validation" in log
    state = json.loads((_checkpoint(run_dir, UPDATES) / "training_state.json").read_text())
    assert (state["global_step"], state["epoch"], state["batches_in_epoch"]) == (UPDATES, 2, 0)
    # each epoch counts the 40 studies of its 2 groups of 5 x 4; the 8 of its partial group are never read
    assert state["seen_studies"] == 2 * 40


def test_sigkill_before_the_partial_group_then_resume_is_bitwise_exact(uninterrupted, tiny_demo, tmp_path):
    path, reference, _ = uninterrupted
    arguments = remainder_arguments(tiny_demo, tmp_path, path)
    # step 2 is the last update of epoch 1: its checkpoint stands before the partial group and the end of the epoch
    killed = run_train_py(arguments, {"ALTA_TEST_SIGKILL_AFTER_STEP": "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    state = json.loads((_checkpoint(tmp_path / "run", 2) / "training_state.json").read_text())
    assert (state["epoch"], state["batches_in_epoch"]) == (0, 10)

    resumed = run_train_py(arguments + ["--resume_from_checkpoint", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 2 (epoch 0, batch 10)" in resumed.stderr and "epoch 1: validation" in resumed.stderr
    for step in (2, UPDATES):
        assert_bitwise_equal(_weights(_checkpoint(tmp_path / "run", step)), _weights(_checkpoint(reference, step)))


def _weights(checkpoint) -> dict:
    from safetensors.torch import load_file

    return load_file(str(checkpoint / "model.safetensors"))
