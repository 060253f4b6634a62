"""train.py end to end on the tiny setup: it learns, saves a loadable model, resumes exactly after SIGKILL (also in the
middle of a checkpoint write), runs on two gloo processes, pushes to a (fake) Hub, and stops on a high skip rate."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState

import alta_hf.training.loop as loop
from devtools.processes import run_accelerate_on_cpu
from alta_hf.modeling_alta import AltaForPreTraining, AltaModel
from alta_hf.processing import load_processor
from tests.training_setup import assert_bitwise_equal, final_weights, run_train_py, tiny_train_arguments
from alta_hf.training.arguments import parse_arguments
from alta_hf.training.data import SAMPLE_COUNTERS, StudyDataset, TrainingCollator, load_pretraining_split

REPO_ROOT = Path(__file__).resolve().parents[1]
# four epochs of 48 studies at batch 8: 24 optimizer steps
TOTAL_STEPS = 24


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """loop.main creates an Accelerator; the next in-process run must not inherit its state."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _fixed_batch_loss(model: AltaForPreTraining, data_dir: Path, processor) -> float:
    rows, image_root, _ = load_pretraining_split(str(data_dir / "pretrain"), "train")
    dataset = StudyDataset(rows, processor, image_root, seed=123, augment=False)
    batch = TrainingCollator()([dataset[index] for index in range(16)])
    for name in SAMPLE_COUNTERS:
        batch.pop(name)
    grid = model.config.vision_config.image_size // model.config.vision_config.patch_size
    batch["noise"] = torch.rand(16, model.config.num_view_slots, grid**2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(**batch).loss.item()


@pytest.fixture(scope="module")
def uninterrupted(tiny_demo, tmp_path_factory):
    """A complete run in a subprocess (the reference of the resume tests)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    result = run_train_py(tiny_train_arguments(tiny_demo, root / "configs", root / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


def test_arguments_come_from_the_config_file_and_the_command_line_wins(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model_config: m.json\ntrain_dataset: d\noutput_dir: o\nper_device_train_batch_size: 7\n")
    _, _, training_args = parse_arguments(["--config", str(config), "--per_device_train_batch_size", "3"])
    assert training_args.per_device_train_batch_size == 3
    _, data_args, training_args = parse_arguments(["--config", str(config)])
    assert training_args.per_device_train_batch_size == 7 and data_args.train_dataset == "d"
    config.write_text("model_config: m.json\ntrain_dataset: d\noutput_dir: o\nbatch: 7\n")
    with pytest.raises(ValueError, match=r"run.yaml: unknown argument\(s\) \['batch'\]"):
        parse_arguments(["--config", str(config)])
    with pytest.raises(ValueError, match="exactly one start point"):
        parse_arguments(["--train_dataset", "d", "--output_dir", "o"])


def test_training_lowers_the_loss_and_saves_a_loadable_model(tiny_demo, tmp_path):
    arguments = tiny_train_arguments(tiny_demo, tmp_path / "configs", tmp_path / "run", validation_task="demo",
                                     validation_data=tiny_demo / "eval", report_to="tensorboard")
    model_args, _, _ = parse_arguments(arguments)
    from alta_hf.training.model_setup import build_model_and_processor

    torch.manual_seed(0)
    initial, processor = build_model_and_processor(model_args, {"tokenizer_dir": str(tiny_demo / "tokenizer")})
    before = _fixed_batch_loss(initial, tiny_demo, processor)

    model_dir = loop.main(arguments)
    assert model_dir == tmp_path / "run" / "model"
    trained = AltaForPreTraining.from_pretrained(model_dir)
    after = _fixed_batch_loss(trained, tiny_demo, load_processor(model_dir))
    assert after < 0.85 * before, (before, after)  # a fixed batch, so that the drop is the training's

    # the folder is a complete model: inference class, processor, remote code, the run's arguments and best metric
    saved = json.loads((model_dir / "training_args.json").read_text())
    assert saved["per_device_train_batch_size"] == 8 and "zero_shot/accuracy" in saved["best_metric"]
    assert {"processor_config.json", "modeling_alta.py", "configuration_alta.py", "tokenizer_config.json"} <= set(os.listdir(model_dir))
    inference = AltaModel.from_pretrained(model_dir)
    assert torch.equal(inference.logit_scale, trained.alta.logit_scale)
    assert list((tmp_path / "run" / "logs").rglob("events.out.tfevents*")), "no TensorBoard log"
    checkpoints = sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == [f"checkpoint_{TOTAL_STEPS - 2}", f"checkpoint_{TOTAL_STEPS}"]  # the last two kept


def test_sigkill_at_a_random_step_then_resume_is_bitwise_exact(tiny_demo, uninterrupted, tmp_path):
    kill_step = random.Random(os.environ.get("PYTEST_SEED", 7)).choice([5, 9, 13, 15, 19])  # between checkpoints
    arguments = tiny_train_arguments(tiny_demo, tmp_path / "configs", tmp_path / "run")
    killed = run_train_py(arguments, {"ALTA_TEST_SIGKILL_AFTER_STEP": str(kill_step)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "run" / "model").exists()
    last_checkpoint = kill_step - kill_step % 2
    assert (tmp_path / "run" / "checkpoints" / f"checkpoint_{last_checkpoint}").is_dir()

    resumed = run_train_py(arguments + ["--resume_from_checkpoint", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {tmp_path / 'run' / 'checkpoints' / f'checkpoint_{last_checkpoint}'}" in resumed.stderr
    assert_bitwise_equal(final_weights(tmp_path / "run"), final_weights(uninterrupted))


def _kill_while_writing(arguments: list[str], temporary_checkpoint: Path) -> None:
    """Run train.py with checkpoint writes paused before their rename; SIGKILL it inside the write of
    `temporary_checkpoint`."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.train_with_faults", *arguments], cwd=REPO_ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "ALTA_TEST_PAUSE_IN_CHECKPOINT_WRITE": "60"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not (temporary_checkpoint / "training_state.json").is_file():
            assert process.poll() is None and time.monotonic() < deadline, f"the run never wrote {temporary_checkpoint}"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()


def test_sigkill_while_a_checkpoint_is_written_leaves_the_previous_one_usable(tiny_demo, uninterrupted, tmp_path):
    arguments = tiny_train_arguments(tiny_demo, tmp_path / "configs", tmp_path / "run", checkpointing_steps=4)
    checkpoints = tmp_path / "run" / "checkpoints"
    _kill_while_writing(arguments, checkpoints / ".tmp-checkpoint_4")  # the first checkpoint
    assert not (checkpoints / "checkpoint_4").exists()

    # nothing complete yet: a resume starts over; the leftover is removed; the result is the uninterrupted one's
    resumed = run_train_py(arguments + ["--resume_from_checkpoint", "latest"],
                              {"ALTA_TEST_SIGKILL_AFTER_STEP": "10"})
    assert resumed.returncode == -signal.SIGKILL
    assert not (checkpoints / ".tmp-checkpoint_4").exists() and (checkpoints / "checkpoint_8").is_dir()
    # now killed in the middle of writing checkpoint 12: checkpoint 8 stays the latest complete one
    _kill_while_writing(arguments + ["--resume_from_checkpoint", "latest"], checkpoints / ".tmp-checkpoint_12")
    resumed = run_train_py(arguments + ["--resume_from_checkpoint", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoint_8 at step 8" in resumed.stderr
    assert_bitwise_equal(final_weights(tmp_path / "run"), final_weights(uninterrupted))


def test_cached_accumulation_trains_like_one_large_batch(tiny_demo, tmp_path):
    """2 cached micro-batches of 4 per step = plain batches of 8: same samples, same masking noise (drawn in the same
    order from the same RNG), the contrastive losses over all 8."""
    def trained_weights(name, **overrides):
        arguments = tiny_train_arguments(tiny_demo, tmp_path / "configs", tmp_path / name, max_train_steps=3,
                                         **overrides)
        AcceleratorState._reset_state(reset_partial_state=True)
        return final_weights(loop.main(arguments).parent)

    plain = trained_weights("plain", per_device_train_batch_size=8)
    cached = trained_weights("cached", per_device_train_batch_size=4, gradient_accumulation_steps=2,
                             cached_contrastive_accumulation=True)
    accumulated = trained_weights("accumulated", per_device_train_batch_size=4, gradient_accumulation_steps=2)
    assert plain.keys() == cached.keys()
    for name in plain:
        torch.testing.assert_close(cached[name], plain[name], rtol=1e-4, atol=2e-5, msg=name)
    # plain accumulation does not enlarge the contrastive batch: its result differs
    assert max((accumulated[name] - plain[name]).abs().max().item() for name in plain) > 2e-4


def _launch_two_processes(script_and_arguments: list[str]) -> subprocess.CompletedProcess:
    return run_accelerate_on_cpu(script_and_arguments, processes=2, threads=1, timeout=600, cwd=REPO_ROOT)


@pytest.mark.slow
def test_train_py_runs_on_two_processes(tiny_demo, tmp_path):
    arguments = tiny_train_arguments(tiny_demo, tmp_path / "configs", tmp_path / "run", max_train_steps=4,
                                     per_device_train_batch_size=4, validation_task="demo",
                                     validation_data=tiny_demo / "eval")
    result = _launch_two_processes(["train.py", *arguments])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stderr
    assert json.loads((tmp_path / "run" / "model" / "training_args.json").read_text())["global_step"] == 4
    weights = AltaModel.from_pretrained(tmp_path / "run" / "model").state_dict()
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())


def test_push_to_hub_uploads_the_model_card_and_never_prints_the_token(tiny_demo, tmp_path, capsys, caplog):
    from tests.fake_hub import FakeHub

    token = "hf_secret_token_for_the_test"
    arguments = tiny_train_arguments(tiny_demo, tmp_path / "configs", tmp_path / "run", max_train_steps=2,
                                     push_to_hub=True, hub_model_id="me/alta-tiny", hub_token=token)
    with FakeHub().installed() as hub:
        loop.main(arguments)
        files = hub.files("me/alta-tiny")
    assert {"config.json", "model.safetensors", "processor_config.json", "modeling_alta.py", "README.md"} <= set(files)
    card = files["README.md"].decode()
    assert "trainable" in card.lower()
    printed = capsys.readouterr()
    assert token not in printed.out + printed.err + caplog.text
    assert token not in (tmp_path / "run" / "model" / "training_args.json").read_text()


def test_a_few_unreadable_studies_are_counted_and_too_many_stop_the_run(tiny_demo, tmp_path):
    data = tmp_path / "demo"
    shutil.copytree(tiny_demo, data)
    # the copy's images: alta_dataset.json names the shared fixture's folder, which other tests need intact
    rows, image_root, _ = load_pretraining_split(str(data / "pretrain"), "train", str(data))
    frontal = sorted({row["frontal_path"] for row in rows})
    (image_root / frontal[0]).write_bytes(b"not an image")  # 1 of 48: counted, the run goes on

    model_dir = loop.main(tiny_train_arguments(data, tmp_path / "configs", tmp_path / "ok", num_train_epochs=2,
                                                max_skipped_fraction=0.05, image_root=data))
    state = json.loads(sorted((tmp_path / "ok" / "checkpoints").glob("checkpoint_*/training_state.json"))[-1]
                       .read_text())
    assert state["skipped_studies"] == 2 and state["seen_studies"] == 2 * 48 + 2  # once per epoch
    assert model_dir.is_dir()

    AcceleratorState._reset_state(reset_partial_state=True)
    for path in frontal[1:12]:  # 12 of 48 = 25 %: proven above 5 % (the 99.9 % bound) within the first epoch
        (image_root / path).unlink()
    with pytest.raises(RuntimeError, match=r"could not be read: .* more than --max_skipped_fraction 0.05"):
        loop.main(tiny_train_arguments(data, tmp_path / "configs", tmp_path / "bad", max_skipped_fraction=0.05,
                                       image_root=data))
