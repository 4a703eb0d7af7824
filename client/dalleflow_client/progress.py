"""Progress bars on stderr for the CLI (tqdm): one per generator, fed by a stream or a job.

    with ProgressBars() as bars:
        result = bars.follow(client.generate_stream(prompt))   # the same Result as generate()
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO

from tqdm import tqdm

from .errors import DalleflowError
from .results import Result
from .schemas import GeneratedEvent, Job, ProgressEvent, ResultEvent, StepProgress
from .streaming import Event


class ProgressBars:
    def __init__(self, file: TextIO | None = None):
        self.file = file or sys.stderr
        self._bars: dict[str, tqdm] = {}

    def _bar(self, generator: str, step_count: int) -> tqdm:
        if generator not in self._bars:
            self._bars[generator] = tqdm(
                total=step_count, desc=generator, unit="step", file=self.file,
                position=len(self._bars), leave=True, dynamic_ncols=True,
            )  # fmt: skip
        return self._bars[generator]

    def step(self, generator: str, progress: StepProgress | ProgressEvent) -> None:
        bar = self._bar(generator, progress.step_count)
        bar.update(progress.step - bar.n)

    def finished(self, event: GeneratedEvent) -> None:
        bar = self._bars.get(event.generator) or self._bar(event.generator, 0)
        report = event.report
        bar.set_postfix_str(f"{report.count} images" if report.status == "ok" else f"{report.status}: {report.error}")
        bar.close()

    def follow(self, events: Iterable[Event]) -> Result:
        """Shows each event, and returns the stream's result."""
        for event in events:
            if isinstance(event, ProgressEvent):
                self.step(event.generator, event)
            elif isinstance(event, GeneratedEvent):
                self.finished(event)
            elif isinstance(event, ResultEvent):
                return Result(event.result)
        raise DalleflowError("the stream ended before the result")  # pragma: no cover - iter_events raises first

    def show_job(self, job: Job) -> None:
        for generator, progress in job.progress.items():
            self.step(generator, progress)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
