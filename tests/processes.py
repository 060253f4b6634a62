"""Child processes that cannot outlive their test.

A hung rank must fail its test, not the whole run: non-daemonic children that never exit are joined by Python at
interpreter exit, and grandchildren of a launcher keep its output pipes open after the launcher itself is killed.
"""

import os
import signal
import subprocess
import sys
import time

import torch.multiprocessing as mp


def run_ranks(worker, args: tuple, world_size: int, timeout: float) -> None:
    """Run `worker(rank, *args)` in `world_size` fresh processes and wait for all of them.

    Spawned, not forked: a fork taken while the parent's OpenMP pool or a tqdm monitor thread holds a lock can
    deadlock the child (seen on CI). Whatever happens, no child is left running when this returns or raises.
    """
    context = mp.start_processes(worker, args=args, nprocs=world_size, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{world_size} ranks of {worker.__name__} still running after {timeout:.0f} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join()


def run_command(command: list[str], *, timeout: float, **popen_kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(command, capture_output=True, text=True)` that kills the whole process group on timeout
    (an `accelerate launch` leaves its worker processes behind otherwise)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, **popen_kwargs)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def run_accelerate_on_cpu(script_and_arguments: list[str], *, processes: int, threads: int, timeout: float,
                          cwd) -> subprocess.CompletedProcess:
    """`accelerate launch` of a script on the CPU (gloo when `processes` > 1), `threads` OpenMP threads per process,
    through `run_command`."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if processes > 1:
        command += ["--multi_gpu", "--main_process_port", str(29500 + os.getpid() % 1000)]
    return run_command([*command, *script_and_arguments], cwd=cwd, env=env, timeout=timeout)
