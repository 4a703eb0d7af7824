"""Training time that survives resumes and leaves out evaluation, and a clean stop on a signal, shared by every trainer."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
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
