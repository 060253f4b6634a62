"""train.py with the faults the resume tests inject (a script, not a test; the faults are patched in, so that no
production module carries a test hook):

    python -m tests.train_with_faults ARGUMENTS...          # the arguments of train.py

ALTA_TEST_SIGKILL_AFTER_STEP=N   the process kills itself (SIGKILL) after optimizer update N and its checkpoint.
ALTA_TEST_PAUSE_IN_CHECKPOINT_WRITE=S   every checkpoint write waits S seconds once its training_state.json is
    written, before its rename, so that a test can kill the process inside the write.
"""

import os
import signal
import time

import alta_hf.training.checkpointing as checkpointing
import alta_hf.training.loop as loop

KILL_AFTER_STEP = "ALTA_TEST_SIGKILL_AFTER_STEP"
PAUSE_IN_CHECKPOINT_WRITE = "ALTA_TEST_PAUSE_IN_CHECKPOINT_WRITE"


def kill_after_step(step: int) -> None:
    after_update = loop.after_update

    def after_update_then_kill(run, *args, **kwargs):
        after_update(run, *args, **kwargs)
        if run.state["global_step"] == step:
            os.kill(os.getpid(), signal.SIGKILL)

    loop.after_update = after_update_then_kill


def pause_in_checkpoint_write(seconds: float) -> None:
    write = checkpointing._write_json_durably

    def write_then_pause(path, value):
        write(path, value)
        if path.name == checkpointing.STATE_FILE:
            time.sleep(seconds)

    checkpointing._write_json_durably = write_then_pause


if __name__ == "__main__":
    if os.environ.get(KILL_AFTER_STEP):
        kill_after_step(int(os.environ[KILL_AFTER_STEP]))
    if os.environ.get(PAUSE_IN_CHECKPOINT_WRITE):
        pause_in_checkpoint_write(float(os.environ[PAUSE_IN_CHECKPOINT_WRITE]))
    loop.main()
