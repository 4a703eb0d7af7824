"""What the benches share: a free port for a server, and what a result records of how it was made
(command line, machine, commit, date).

The benches run as scripts (`.venv/bin/python bench/latency.py`), so this folder is on
sys.path and they import it as `harness`.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command_line() -> str:
    """How this run was started, OMP_NUM_THREADS included when set (it changes the figures)."""
    threads = os.environ.get("OMP_NUM_THREADS")
    return (f"OMP_NUM_THREADS={threads} " if threads else "") + ".venv/bin/python " + shlex.join(sys.argv)


def machine() -> str:
    """The processor, its CPU count, and each GPU torch sees."""
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return ", ".join([platform.machine(), f"{os.cpu_count()} CPUs", *gpus])


def commit() -> str:
    """The commit the bench ran at, with "+changes" when the tracked code differed from it
    (results files written since do not count)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results")
    return head + ("+changes" if changed else "")


def provenance() -> dict[str, str]:
    """What every results file records of its making."""
    return {"command": command_line(), "machine": machine(), "commit": commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
