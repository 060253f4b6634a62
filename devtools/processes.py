"""Child processes that cannot outlive their test or benchmark.

A hung rank must fail its test, not the whole run: non-daemonic children that never exit are joined by Python at
interpreter exit, and grandchildren of a launcher keep its output pipes open after the launcher itself is killed.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import torch
import torch.distributed as dist
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


@contextlib.contextmanager
def gloo_process_group(rank: int, init_file: str, world_size: int):
    """The process group of one rank started by `run_ranks`: gloo through a shared file, one torch thread (the ranks
    share the cores), destroyed on the way out."""
    torch.set_num_threads(1)
    # the ranks are processes of this machine: gloo connects them over loopback, not over whatever interface the
    # hostname resolves to (the two-rank test once hung for its whole 240-s timeout; the cause was not pinned down)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def run_commands(commands: list[list[str]], *, timeout: float, **popen_kwargs) -> list[subprocess.CompletedProcess]:
    """Run `commands` at the same time, each in its own process group, and wait for all of them under one deadline.
    On a timeout (or any error) every process group is killed: an `accelerate launch` leaves its worker processes
    behind otherwise. Output goes through temporary files, so that no child blocks on a full pipe."""
    deadline = time.monotonic() + timeout
    outputs = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in commands]
    processes = []
    try:
        for command, (stdout, stderr) in zip(commands, outputs):
            processes.append(subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True,
                                              start_new_session=True, **popen_kwargs))
        for process in processes:
            process.wait(timeout=max(deadline - time.monotonic(), 0.0))
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    results = []
    for command, process, (stdout, stderr) in zip(commands, processes, outputs):
        stdout.seek(0), stderr.seek(0)
        results.append(subprocess.CompletedProcess(command, process.returncode, stdout.read(), stderr.read()))
        stdout.close(), stderr.close()
    return results


def run_command(command: list[str], *, timeout: float, **popen_kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(command, capture_output=True, text=True)` bounded as `run_commands` bounds its commands."""
    return run_commands([command], timeout=timeout, **popen_kwargs)[0]


def free_port() -> int:
    """A TCP port nothing listens on now (the rendezvous of a multi-process launch)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accelerate_on_cpu(script_and_arguments: list[str], *, processes: int, machines: int = 1, machine_rank: int = 0,
                      port: int | None = None) -> list[str]:
    """The `accelerate launch` command of a script on the CPU (gloo when more than one process in all): `processes`
    per machine, `machines` machines on the loopback address (run one command per `machine_rank`)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes * machines),
               "--num_machines", str(machines), "--mixed_precision", "no", "--dynamo_backend", "no"]
    if processes * machines > 1:
        command += ["--multi_gpu", "--main_process_port", str(port or free_port())]
    if machines > 1:
        command += ["--machine_rank", str(machine_rank), "--main_process_ip", "127.0.0.1"]
    return [*command, *script_and_arguments]


def run_accelerate_on_cpu(script_and_arguments: list[str], *, processes: int, threads: int, timeout: float, cwd,
                          env: dict | None = None) -> subprocess.CompletedProcess:
    """`accelerate launch` of a script (or `-m module`) on the CPU of one machine, `threads` OpenMP threads per
    process, bounded by `run_commands`."""
    return run_machines_on_cpu(script_and_arguments, machines=1, processes=processes, threads=threads,
                               timeout=timeout, cwd=cwd, env=env)[0]


def run_machines_on_cpu(script_and_arguments: list[str], *, machines: int, processes: int, threads: int,
                        timeout: float, cwd, env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """One `accelerate launch` per machine, all of them on this one and on the loopback address, started together
    and bounded by `run_commands`; their results, machine 0 first."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": str(threads), **(env or {})}
    port = free_port()
    commands = [accelerate_on_cpu(script_and_arguments, processes=processes, machines=machines, machine_rank=rank,
                                  port=port) for rank in range(machines)]
    return run_commands(commands, timeout=timeout, cwd=cwd, env=env)
