"""Many processes and many machines, all on this CPU (gloo): one step on 2 processes of 1 machine and on 2 machines of
1 process gives the loss and gradients of one process with the whole batch; train.py on 2 machines (two `accelerate
launch` commands on the loopback address) trains like 2 processes of one machine, and after both machines are
killed, both resume to the same final weights."""

import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from devtools.processes import run_command, run_machines_on_cpu
from tests.training_setup import assert_bitwise_equal, final_weights, tiny_train_arguments

REPO_ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300
LAYOUTS = {"1 machine x 2 processes": (1, 2), "2 machines x 1 process": (2, 1)}


def launch(script_and_arguments: list[str], layout: str, env: dict | None = None):
    machines, processes = LAYOUTS[layout]
    return run_machines_on_cpu(script_and_arguments, machines=machines, processes=processes, threads=1,
                               timeout=TIMEOUT, cwd=REPO_ROOT, env=env)


def assert_all_succeeded(results) -> None:
    for rank, result in enumerate(results):
        assert result.returncode == 0, f"machine {rank}:\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def one_process_step(tiny_demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("one_process")
    result = run_command([sys.executable, "-m", "tests.distributed_step", str(tiny_demo), str(out / "configs"),
                          str(out), "8"], cwd=REPO_ROOT, timeout=TIMEOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return load_file(str(out / "step.safetensors"))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_step_gives_the_loss_and_gradients_of_one_process_with_the_whole_batch(layout, one_process_step, tiny_demo,
                                                                                  tmp_path):
    assert_all_succeeded(launch(["-m", "tests.distributed_step", str(tiny_demo), str(tmp_path / "configs"),
                                 str(tmp_path), "8"], layout))
    actual = load_file(str(tmp_path / "step.safetensors"))
    assert actual.keys() == one_process_step.keys()
    assert sum(name.startswith("grad/") for name in actual) > 50
    for name, expected in one_process_step.items():
        torch.testing.assert_close(actual[name], expected, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow  # three 2-process launches: about 2 minutes on the shared 2-core machine
def test_train_py_on_two_machines_trains_like_two_processes_and_resumes_both_exactly(tiny_demo, tmp_path):
    def arguments(name):
        return tiny_train_arguments(tiny_demo, tmp_path / "configs", tmp_path / name, per_device_train_batch_size=4,
                                    max_train_steps=4)

    assert_all_succeeded(launch(["train.py", *arguments("processes")], "1 machine x 2 processes"))
    # both machines kill themselves after step 3; checkpoint 2 is the last complete one
    killed = launch(["-m", "tests.train_with_faults", *arguments("machines")], "2 machines x 1 process",
                    env={"ALTA_TEST_SIGKILL_AFTER_STEP": "3"})
    assert all(result.returncode != 0 for result in killed), [result.returncode for result in killed]
    assert any("SIGKILL" in result.stderr or f"-{signal.SIGKILL}" in result.stderr for result in killed)
    assert (tmp_path / "machines" / "checkpoints" / "checkpoint_2").is_dir()
    assert not (tmp_path / "machines" / "model").exists()

    resumed = launch(["train.py", *arguments("machines"), "--resume_from_checkpoint", "latest"],
                     "2 machines x 1 process")
    assert_all_succeeded(resumed)
    assert "resumed from" in resumed[0].stderr and "2 process(es)" in resumed[0].stderr
    assert_bitwise_equal(final_weights(tmp_path / "machines"), final_weights(tmp_path / "processes"))
