"""Bad input for train.py (issue 17): an unwritable output folder, too many unreadable studies, damaged checkpoints
and unreadable random states. Each case asserts the error naming the input, and that the finished steps are still
in a checkpoint to resume from."""

import json
import logging
import shutil

import pytest
from accelerate.state import AcceleratorState
from scipy.stats import binomtest

import alta_hf.training.loop as loop
from alta_hf.evaluation.output_folder import OutputFolderError
from tests.training_setup import tiny_train_arguments
from alta_hf.training.checkpointing import list_checkpoints
from alta_hf.training.data import load_pretraining_split
from alta_hf.training.logging_utils import ProblemCounter


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _state(checkpoint) -> dict:
    return json.loads((checkpoint / "training_state.json").read_text())


def _final_step(output) -> int:
    return json.loads((output / "model" / "training_args.json").read_text())["global_step"]


# ----- the skip limit ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seen, skipped, stops", [
    (100, 6, False),  # 6 % seen, but 100 studies do not prove a rate above 5 %: the old rule stopped here
    (1000, 48, False), (10000, 520, False),  # just under or at the limit, on noise
    (1000, 90, True), (60, 15, True),  # clearly above
    (1, 0, False),
])
def test_skip_limit_is_a_confidence_bound(seen, skipped, stops):
    counter = ProblemCounter({"seen_studies": seen, "skipped_studies": skipped}, max_skipped_fraction=0.05)
    assert counter.exceeded() is stops
    if skipped:  # the one-sided 99.9 % bound is the lower end of the two-sided 99.8 % exact interval
        expected = binomtest(skipped, seen).proportion_ci(confidence_level=0.998, method="exact").low
        assert counter.skip_rate_lower_bound() == pytest.approx(expected, rel=1e-6)
    strict = ProblemCounter({"seen_studies": seen, "skipped_studies": skipped}, max_skipped_fraction=0.0)
    assert strict.exceeded() is (skipped > 0)


def test_the_skip_limit_fires_after_that_steps_checkpoint_and_the_run_resumes(tiny_demo, tmp_path):
    data = tmp_path / "demo"
    shutil.copytree(tiny_demo, data)
    # the copy's own images (alta_dataset.json names the shared fixture's folder, which must stay intact)
    rows, image_root, _ = load_pretraining_split(str(data / "pretrain"), "train", str(data))
    frontal = sorted({row["frontal_path"] for row in rows})
    for path in frontal[:14]:  # 14 of 48 studies unreadable: far above 5 %
        (image_root / path).write_bytes(b"not an image")
    output = tmp_path / "run"
    # no scheduled checkpoint before step 100: only the stop itself can have saved one
    arguments = tiny_train_arguments(data, tmp_path / "configs", output, checkpointing_steps=100, logging_steps=1,
                                     max_skipped_fraction=0.05, image_root=data)
    with pytest.raises(RuntimeError, match=r"could not be read: the skip rate is above 0\.\d+ with 99\.9% confidence"):
        loop.main(arguments)
    (checkpoint,) = list_checkpoints(output)
    state = _state(checkpoint)
    assert checkpoint.name == f"checkpoint_{state['global_step']}" and state["global_step"] >= 1
    assert state["skipped_studies"] > 0.05 * state["seen_studies"]
    counter = ProblemCounter(state, 0.05)
    assert counter.exceeded()
    AcceleratorState._reset_state(reset_partial_state=True)
    # the counters survive a resume (the rule judges the whole run), so going on means accepting the rate
    loop.main(arguments + ["--resume_from_checkpoint", "latest", "--max_train_steps", str(state["global_step"] + 1),
                           "--max_skipped_fraction", "1.0"])
    assert _final_step(output) == state["global_step"] + 1


# ----- the output folder ---------------------------------------------------------------------------------------------
def test_unwritable_output_folder_fails_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    # the dataset does not exist either: the output folder must be the first thing checked
    arguments = tiny_train_arguments(tmp_path / "no-data", tmp_path / "configs", blocker / "run")
    with pytest.raises(OutputFolderError, match=rf"{blocker / 'run'}: cannot create the output folder"):
        loop.main(arguments)


# ----- damaged checkpoints -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def four_steps(tiny_demo, tmp_path_factory):
    """A run stopped after 4 steps: checkpoints 2 and 4."""
    root = tmp_path_factory.mktemp("four")
    arguments = tiny_train_arguments(tiny_demo, root / "configs", root / "run", max_train_steps=4)
    loop.main(arguments)
    AcceleratorState._reset_state(reset_partial_state=True)
    assert [path.name for path in list_checkpoints(root / "run")] == ["checkpoint_2", "checkpoint_4"]
    return root / "run", arguments


def _damaged_copy(four_steps, tmp_path, damage):
    run, arguments = four_steps
    copy = shutil.copytree(run, tmp_path / "run")
    damage(copy / "checkpoints" / "checkpoint_4")
    output_index = arguments.index("--output_dir") + 1
    return copy, arguments[:output_index] + [str(copy)] + arguments[output_index + 1:]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage, problem", [
    (lambda c: _truncate(c / "model.safetensors"), "model.safetensors is unreadable"),
    (lambda c: _truncate(c / "optimizer.bin"), "optimizer.bin is truncated"),
    (lambda c: (c / "training_state.json").write_text("{"), "training_state.json is unreadable"),
    (lambda c: (c / "random_states_0.pkl").write_bytes(b"garbage"), "random_states_0.pkl is unreadable"),
])
def test_latest_falls_back_to_the_previous_intact_checkpoint(four_steps, tmp_path, caplog, damage, problem):
    run, arguments = _damaged_copy(four_steps, tmp_path, damage)
    with caplog.at_level(logging.INFO):
        loop.main(arguments + ["--resume_from_checkpoint", "latest", "--max_train_steps", "6"])
    assert f"checkpoint_4 is damaged ({problem}" in caplog.text
    assert f"resumed from {run / 'checkpoints' / 'checkpoint_2'} at step 2" in caplog.text
    assert _state(list_checkpoints(run)[-1])["global_step"] == 6


def test_every_checkpoint_damaged_stops_instead_of_starting_over(four_steps, tmp_path):
    run, arguments = _damaged_copy(four_steps, tmp_path, lambda c: _truncate(c / "model.safetensors"))
    _truncate(run / "checkpoints" / "checkpoint_2" / "model.safetensors")
    with pytest.raises(RuntimeError, match=r"no intact checkpoint to resume from \(checkpoint_4: model\.safetensors"):
        loop.main(arguments + ["--resume_from_checkpoint", "latest", "--max_train_steps", "6"])
    assert [path.name for path in list_checkpoints(run)] == ["checkpoint_2", "checkpoint_4"]  # nothing overwritten


def test_an_explicit_damaged_checkpoint_is_an_error(four_steps, tmp_path):
    run, arguments = _damaged_copy(four_steps, tmp_path, lambda c: _truncate(c / "model.safetensors"))
    checkpoint = run / "checkpoints" / "checkpoint_4"
    with pytest.raises(RuntimeError, match=rf"{checkpoint}: damaged checkpoint \(model\.safetensors is unreadable"):
        loop.main(arguments + ["--resume_from_checkpoint", str(checkpoint), "--max_train_steps", "6"])


def test_unreadable_random_states_of_an_explicit_checkpoint_warn_loudly(four_steps, tmp_path, caplog):
    run, arguments = _damaged_copy(four_steps, tmp_path, lambda c: (c / "random_states_0.pkl").write_bytes(b"x"))
    checkpoint = run / "checkpoints" / "checkpoint_4"
    with caplog.at_level(logging.INFO):
        loop.main(arguments + ["--resume_from_checkpoint", str(checkpoint), "--max_train_steps", "5"])
    assert "random_states_0.pkl is unreadable" in caplog.text and "THE RESUME IS NOT EXACT" in caplog.text
    assert f"resumed from {checkpoint} at step 4" in caplog.text
    assert _final_step(run) == 5
