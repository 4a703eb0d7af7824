"""The pick-and-refine loop in a terminal: generate -> pick -> refine -> upscale.

    dalleflow interactive "a red circle to the left of a blue square" --num-images 4 --out session/

Each step saves what it shows (the ranked grid and every candidate, PNGs with metadata) and
prints a numbered table; each question reads one line, and Enter takes the default in
brackets. It reads lines only, so a pipe drives it as well as a person does:

    printf '2\\n0.6\\n8\\n0\\n' | dalleflow interactive "a red circle ..."

(pick 2, skip_rate 0.6, 8 variations, upscale variation 0.)
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from .client import Client
from .errors import DalleflowError
from .images import save_png
from .results import CandidateImage, Result
from .schemas import MAX_REFINE_IMAGES, RefineRequest

T = TypeVar("T")
EXAMPLE_PROMPT = "a red circle to the left of a blue square on a white background"
REFINE_AGAIN = "r"
# Answers of older versions, still read: "v" was "vary again".
OLD_ANSWERS = {"v": REFINE_AGAIN}


class NoAnswer(DalleflowError):
    """The input ended before a question was answered."""


@dataclass
class Terminal:
    """Questions and answers over two text streams."""

    input: IO[str]
    output: IO[str]

    def say(self, text: str = "") -> None:
        print(text, file=self.output, flush=True)

    def ask(self, question: str, parse: Callable[[str], T], default: T) -> T:
        """Ask until `parse` takes the answer (it raises ValueError saying why not); Enter gives `default`."""
        while True:
            self.output.write(f"{question} [{default}]: ")
            self.output.flush()
            line = self.input.readline()
            if not line:
                raise NoAnswer(f"the input ended before an answer to {question!r}")
            if not self.input.isatty():  # so that a piped answer shows in the transcript
                self.output.write(line if line.endswith("\n") else line + "\n")
            answer = line.strip()
            if not answer:
                return default
            try:
                return parse(answer)
            except ValueError as error:
                self.say(f"  {error}")


def index_in(count: int, also: tuple[str, ...] = (), old: dict[str, str] | None = None) -> Callable[[str], int | str]:
    """An index below count, or one of the words `also`; `old` maps words no longer shown to those they stand for."""
    def parse(answer: str) -> int | str:
        answer = (old or {}).get(answer.lower(), answer)
        if answer.lower() in also:
            return answer.lower()
        if not answer.isdigit() or int(answer) >= count:
            choices = f"a number from 0 to {count - 1}" + "".join(f" or {word!r}" for word in also)
            raise ValueError(f"{answer!r} is not {choices}")
        return int(answer)

    return parse


def number_between(low: float, high: float, kind: type = float) -> Callable[[str], float]:
    def parse(answer: str) -> float:
        try:
            value = kind(answer)
        except ValueError:
            raise ValueError(f"{answer!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if not low <= value <= high:
            raise ValueError(f"{answer} is outside {low} to {high}")
        return value

    return parse


def show(terminal: Terminal, result: Result, out: Path, title: str) -> None:
    """Save the grid and each image of `result` into `out`, and print where, with a numbered table."""
    grid_path = save_png(result.grid(), out / f"{result.id[:8]}-grid.png", result.metadata)
    paths = result.save(out)
    terminal.say(f"\n{title}: {len(result)} ranked, grid {grid_path}")
    terminal.say(f"{'#':>4}  {'generator':<18} {'score':>7}  {'seed':>10}  file")
    for index, (candidate, path) in enumerate(zip(result.candidates, paths)):
        terminal.say(f"{index:>4}  {candidate.generator:<18} {candidate.clip_score:7.3f}  {candidate.seed:>10}  {path}")
    for name, report in result.generators.items():
        if report.status != "ok":
            terminal.say(f"  generator {name}: {report.status} {report.error or ''}".rstrip())
    for warning in result.warnings:
        terminal.say(f"  warning: {warning}")


def run(
    client: Client,
    terminal: Terminal,
    prompt: str,
    out: Path,
    sampling: dict,
    waiting: Callable[[str], AbstractContextManager] = lambda message: nullcontext(),
) -> Path:
    """Walk the loop until an image is upscaled, and return the path of the PNG it saved.

    `sampling` holds generate's options (num_images, seed, num_inference_steps, guidance_scale,
    negative_prompt); the variations use the same, with the count and skip_rate asked.
    """
    with waiting("generating"):
        pool = client.generate(prompt, **sampling)
    show(terminal, pool, out, "candidates")
    skip_rate = RefineRequest.model_fields["skip_rate"].default
    variation_count = RefineRequest.model_fields["num_images"].default
    while True:  # show() has refused an empty answer, so there is always one to pick
        pick: CandidateImage = pool[terminal.ask(f"pick an image, 0 to {len(pool) - 1}", index_in(len(pool)), 0)]
        skip_rate = terminal.ask("skip_rate, 0 to 1 (near 1 stays close to the pick)", number_between(0, 1), skip_rate)
        variation_count = terminal.ask(
            f"how many variations, 1 to {MAX_REFINE_IMAGES}",
            number_between(1, MAX_REFINE_IMAGES, int), variation_count,
        )  # fmt: skip
        with waiting("refining"):
            pool = client.refine(pick, prompt, skip_rate=skip_rate, **{**sampling, "num_images": variation_count})
        show(terminal, pool, out, f"variations of {pick.id} at skip_rate {skip_rate}")
        choice = terminal.ask(
            f"upscale which, 0 to {len(pool) - 1} ({REFINE_AGAIN}: refine one of these again)",
            index_in(len(pool), also=(REFINE_AGAIN,), old=OLD_ANSWERS), 0,
        )  # fmt: skip
        if choice != REFINE_AGAIN:
            break
    with waiting("upscaling"):
        upscaled = client.upscale(pool[choice])
    # The server's PNG as it is: it carries its source's prompt, seed and parameters (skip_rate among them).
    path = upscaled.save(out / f"final-{upscaled.id[:8]}.png")
    terminal.say(f"\nupscaled {upscaled.width}x{upscaled.height}, saved {path}")
    return path
