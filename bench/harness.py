"""What the benches share: a free port for a server, and the command line and machine a result records.

The benches run as scripts (`.venv/bin/python bench/latency.py`), so this folder is on
sys.path and they import it as `harness`.
"""

from __future__ import annotations

import os
import platform
import shlex
import socket
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
