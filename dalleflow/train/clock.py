"""What the trainers share: training time that survives resumes and leaves out evaluation, a clean
stop on a signal, the start of a run, and the cosine learning-rate schedule."""

from __future__ import annotations

import argparse
import contextlib
import math
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


class TrainingClock:
    """Training minutes kept in state["minutes"], and an evaluation plus checkpoint
    every `checkpoint_minutes`, whose own time is not counted as training."""

    def __init__(self, state: dict[str, Any], checkpoint_minutes: float):
        self.state = state
        self.every_s = checkpoint_minutes * 60
        self.started = time.time() - state["minutes"] * 60
        self.last_checkpoint = time.time()

    def tick(self) -> None:
        self.state["minutes"] = (time.time() - self.started) / 60

    def checkpoint_if_due(self, evaluate: Callable[[], dict[str, float]], save: Callable[[], None]) -> None:
        if time.time() - self.last_checkpoint <= self.every_s:
            return
        evaluation_started = time.time()
        point = {"step": self.state["step"], "minutes": round(self.state["minutes"], 1), **evaluate()}
        self.state["curve"].append(point)
        print(f"eval {point}", flush=True)
        save()
        self.last_checkpoint = time.time()
        self.started += self.last_checkpoint - evaluation_started


@contextlib.contextmanager
def stop_on_signal() -> Iterator[threading.Event]:
    """An event set on SIGTERM or SIGINT, so a stopped run ends at a step boundary with
    its checkpoint and export written (preemptible machines, a session's end)."""
    event = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: event.set()) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield event
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run(name: str, args: argparse.Namespace, argv: list[str] | None,
        train: Callable[[argparse.Namespace, threading.Event], None]) -> None:  # fmt: skip
    """Run a trainer with its command line kept for its record (args.command), stopped at a
    step boundary by SIGTERM or SIGINT."""
    args.command = f"dalleflow train {name} " + shlex.join(sys.argv[1:] if argv is None else argv)
    with stop_on_signal() as stop:
        train(args, stop)


def start_torch_run(args: argparse.Namespace) -> Path:
    """A torch trainer's threads and seed set, and its checkpoint folder made."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def cosine_lr(base: float, step: int, warmup_steps: int, progress: float) -> float:
    """A linear warmup over the first steps, then cosine decay to zero over the run's progress (0 to 1)."""
    return base * min(1.0, (step + 1) / warmup_steps) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
