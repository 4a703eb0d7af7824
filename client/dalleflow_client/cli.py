"""Command line of the client:

    python -m dalleflow_client generate "a red circle to the left of a blue square" --num-images 2 --out out/
    python -m dalleflow_client refine <image id or file> --prompt "a red circle ..." --skip-rate 0.6
    python -m dalleflow_client upscale <image id or file> --out final.png
    python -m dalleflow_client jobs submit "a red circle ..."    # prints the job id; then: jobs wait|status|cancel ID
    python -m dalleflow_client interactive "a red circle ..." --out session/   # generate -> pick -> refine -> upscale

The server's CLI adds the same commands with add_client_commands, so `dalleflow generate ...` works too.
Options are named as the API's fields (--num-inference-steps, --guidance-scale); the older names
(the `diffuse` command, --steps, --guidance) are still read, and left out of --help.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from . import interactive
from .client import DEFAULT_BASE_URL, Client
from .progress import ProgressBars
from .errors import DalleflowError
from .images import save_png
from .results import Result
from .schemas import GenerateRequest, Job, RefineRequest


def add_client_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add generate, refine, upscale, jobs and interactive to `subparsers`.

    Each command sets `func`: `args.func(args)` runs it and returns the exit status.
    """
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument(
        "--url",
        default=os.environ.get("DALLEFLOW_URL", DEFAULT_BASE_URL),
        help="server (default: $DALLEFLOW_URL or %(default)s)",
    )
    server.add_argument(
        "--api-key",
        help="the server's API key, sent as a bearer token (default: $DALLEFLOW_API_KEY; "
        "prefer the variable: a command line is visible to other users of the machine)",
    )
    common = argparse.ArgumentParser(add_help=False, parents=[server])
    common.add_argument("--json", action="store_true", help="print the answer as JSON, without the base64 images")

    sampling = argparse.ArgumentParser(add_help=False)
    sampling.add_argument(
        "--num-images", metavar="N", type=int,
        default=_default(GenerateRequest, "num_images"),
        help="generate: images per generator; refine: variations in all (default: %(default)s)",
    )  # fmt: skip
    sampling.add_argument("--seed", type=int, help="default: the server draws one (the answer shows it)")
    sampling.add_argument(
        "--num-inference-steps", metavar="N", type=int,
        default=_default(GenerateRequest, "num_inference_steps"), help="denoising steps (default: each model's own)",
    )  # fmt: skip
    sampling.add_argument(
        "--guidance-scale", metavar="SCALE", type=float,
        default=_default(GenerateRequest, "guidance_scale"),
        help="classifier-free guidance (default: each generator's own)",
    )  # fmt: skip
    # The old names, still read: SUPPRESS keeps them out of --help and leaves the default to the new ones.
    for old, field, kind in (("--steps", "num_inference_steps", int), ("--guidance", "guidance_scale", float)):
        sampling.add_argument(old, dest=field, type=kind, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sampling.add_argument("--negative-prompt", metavar="TEXT", help="what the images should not show")
    sampling.add_argument(
        "--out", metavar="DIR", type=Path, default=Path("."), help="folder for the grid and the images (default: .)"
    )

    generate = subparsers.add_parser(
        "generate", parents=[common, sampling], help="images of a prompt from every generator, ranked best first"
    )
    generate.add_argument("prompt")
    generate.add_argument(
        "--generators", metavar="NAMES", type=lambda text: text.split(","), help="comma-separated (default: all enabled)"
    )
    _add_size_options(generate)
    generate.set_defaults(func=_run_generate)

    refine_help = "ranked variations of an image (--num-images of them in all)"
    # `diffuse`, dalle-flow's name, is the same command: a parser without help stays out of the list.
    for name, shown in (("refine", {"help": refine_help}), ("diffuse", {})):
        refine = subparsers.add_parser(name, parents=[common, sampling], description=refine_help, **shown)
        refine.add_argument("image", metavar="IMAGE_OR_ID", help="a PNG/JPEG file, or an image id from an earlier answer")
        refine.add_argument("--prompt", required=True, help="what the variations should show")
        refine.add_argument(
            "--skip-rate", metavar="RATE", type=float, default=_default(RefineRequest, "skip_rate"),
            help="share of the schedule skipped, 0 to 1: near 1 stays close to the image (default: %(default)s)",
        )  # fmt: skip
        refine.set_defaults(func=_run_refine)

    _add_jobs_command(subparsers, common, sampling)

    upscale = subparsers.add_parser("upscale", parents=[common], help="an image at four times its size")
    upscale.add_argument("image", metavar="IMAGE_OR_ID", help="a PNG/JPEG file, or an image id from an earlier answer")
    upscale.add_argument("--out", metavar="FILE", type=Path, help="file to write (default: upscaled-<id>.png)")
    upscale.set_defaults(func=_run_upscale)

    walk = subparsers.add_parser(  # not `interactive`: that is the module it runs
        "interactive", parents=[server, sampling],
        help="generate, pick, refine and upscale, answering questions in the terminal",
    )  # fmt: skip
    walk.add_argument("prompt", nargs="?", help="what the images should show (default: asked)")
    walk.set_defaults(func=_run_interactive)
    if subparsers.metavar is None:
        # Else argparse's usage lists every parser's name, the old ones too.
        subparsers.metavar = "COMMAND"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dalleflow-client", description="Client of a dalleflow server.")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _default(model, field: str):
    # The schema holds the defaults, so --help shows what the server applies.
    return model.model_fields[field].default


def _reporting_errors(command: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            command(args)
        except (DalleflowError, OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        return 0

    return run


def _add_size_options(parser: argparse.ArgumentParser) -> None:
    for side in ("height", "width"):
        parser.add_argument(f"--{side}", metavar="PX", type=int,
                            help=f"image {side} (default: each generator's own; one that cannot make it is refused)")  # fmt: skip


def _size_options(args: argparse.Namespace) -> dict:
    return {side: getattr(args, side) for side in ("height", "width") if getattr(args, side, None) is not None}


def _sampling_options(args: argparse.Namespace) -> dict:
    return dict(
        num_images=args.num_images,
        seed=args.seed,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        negative_prompt=args.negative_prompt,
    )


@_reporting_errors
def _run_generate(args: argparse.Namespace) -> None:
    with Client(args.url, api_key=args.api_key) as client, ProgressBars() as bars:
        result = bars.follow(client.generate_stream(
            args.prompt, generators=args.generators, **_sampling_options(args), **_size_options(args)))
    _save_and_show(result, args)


@_reporting_errors
def _run_refine(args: argparse.Namespace) -> None:
    with Client(args.url, api_key=args.api_key) as client, ProgressBars() as bars:
        result = bars.follow(client.refine_stream(args.image, args.prompt, skip_rate=args.skip_rate, **_sampling_options(args)))
    _save_and_show(result, args)


def _add_jobs_command(subparsers, common: argparse.ArgumentParser, sampling: argparse.ArgumentParser) -> None:
    jobs = subparsers.add_parser("jobs", help="generate or refine in the background: submit, status, wait, cancel")
    actions = jobs.add_subparsers(dest="action", required=True)
    submit = actions.add_parser(
        "submit", parents=[common, sampling], help="queue a generate request (with --image: a refine request); prints the job id"
    )
    submit.add_argument("prompt")
    submit.add_argument(
        "--generators", metavar="NAMES", type=lambda text: text.split(","), help="comma-separated (default: all enabled)"
    )
    _add_size_options(submit)
    submit.add_argument("--image", metavar="IMAGE_OR_ID", help="make variations of this image: a file or an image id")
    submit.add_argument(
        "--skip-rate", metavar="RATE", type=float, default=_default(RefineRequest, "skip_rate"),
        help="with --image: share of the schedule skipped, 0 to 1 (default: %(default)s)",
    )  # fmt: skip
    submit.set_defaults(func=_run_job_submit)
    for name, text, run in (
        ("status", "a job's status, queue position and progress", _run_job_status),
        ("cancel", "cancel a queued or running job", _run_job_cancel),
        ("wait", "follow a job with progress bars; once done, save its grid and images", _run_job_wait),
    ):
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("job_id", metavar="JOB_ID")
        if name == "wait":
            action.add_argument("--out", metavar="DIR", type=Path, default=Path("."), help="folder for the grid and the images (default: .)")
        action.set_defaults(func=run)


def _show_job(job: Job, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(job.model_dump(mode="json", exclude={"result": {"candidates": {"__all__": {"image"}}}}), indent=2))
        return
    where = f" (position {job.queue_position} in the queue)" if job.queue_position is not None else ""
    steps = ", ".join(f"{name} {p.step}/{p.step_count}" for name, p in job.progress.items())
    print(" ".join(part for part in (job.id, job.status + where, steps, job.error or "") if part))


@_reporting_errors
def _run_job_submit(args: argparse.Namespace) -> None:
    with Client(args.url, api_key=args.api_key) as client:
        if args.image is None:
            job = client.submit_generate(args.prompt, generators=args.generators, **_sampling_options(args),
                                         **_size_options(args))
        else:
            job = client.submit_refine(args.image, args.prompt, skip_rate=args.skip_rate, **_sampling_options(args))
    _show_job(job, args) if args.json else print(job.id)


@_reporting_errors
def _run_job_status(args: argparse.Namespace) -> None:
    with Client(args.url, api_key=args.api_key) as client:
        _show_job(client.job(args.job_id), args)


@_reporting_errors
def _run_job_cancel(args: argparse.Namespace) -> None:
    with Client(args.url, api_key=args.api_key) as client:
        _show_job(client.cancel_job(args.job_id), args)


@_reporting_errors
def _run_job_wait(args: argparse.Namespace) -> None:
    with Client(args.url, api_key=args.api_key) as client, ProgressBars() as bars:
        job = client.wait_job(args.job_id, on_update=bars.show_job)
    if job.status != "done":
        raise DalleflowError(f"job {job.id} {job.status}" + (f": {job.error}" if job.error else ""))
    _save_and_show(Result(job.result), args)


@_reporting_errors
def _run_upscale(args: argparse.Namespace) -> None:
    started = time.monotonic()
    with Client(args.url, api_key=args.api_key) as client, _spinner("upscaling"):
        upscaled = client.upscale(args.image)
    seconds = time.monotonic() - started  # the answer has no timings of its own: the round trip as seen here
    path = upscaled.save(args.out or Path(f"upscaled-{upscaled.id}.png"))
    if args.json:
        answer = {"id": upscaled.id, "width": upscaled.width, "height": upscaled.height, "file": str(path),
                  "seconds": round(seconds, 3)}  # fmt: skip
        print(json.dumps(answer, indent=2))
    else:
        print(path)


def _run_interactive(args: argparse.Namespace) -> int:
    terminal = interactive.Terminal(sys.stdin, sys.stdout)
    try:
        prompt = args.prompt or terminal.ask("prompt", str, interactive.EXAMPLE_PROMPT)
        with Client(args.url, api_key=args.api_key) as client:
            interactive.run(client, terminal, prompt, args.out, _sampling_options(args), waiting=_spinner)
    except (DalleflowError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130  # what a shell reports for Ctrl-C
    return 0


def _save_and_show(result: Result, args: argparse.Namespace) -> None:
    for name, report in result.generators.items():
        if report.status != "ok":
            print(f"warning: generator {name}: {report.status} {report.error or ''}".rstrip(), file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    grid_path = save_png(result.grid(), args.out / f"{result.id[:8]}-grid.png", result.metadata)
    paths = result.save(args.out)
    if args.json:
        answer = result.response.model_dump(mode="json", exclude={"candidates": {"__all__": {"image"}}})
        answer["files"] = {"grid": str(grid_path), "candidates": [str(path) for path in paths]}
        print(json.dumps(answer, indent=2))
        return
    print(f"grid  {grid_path}")
    # "#" is the index drawn on the grid and the one `result[i]` takes; 0 is the ranker's pick.
    print(f"{'#':>4}  {'score':>7}  {'generator':<18} {'id':<32}  file")
    for index, (candidate, path) in enumerate(zip(result.candidates, paths)):
        print(f"{index:>4}  {candidate.clip_score:7.3f}  {candidate.generator:<18} {candidate.id:<32}  {path}")


@contextmanager
def _spinner(message: str) -> Iterator[None]:
    """A spinner on stderr while waiting: the API sends no progress yet. Silent when stderr is not a terminal."""
    if not sys.stderr.isatty():
        yield
        return
    done = threading.Event()
    started = time.monotonic()

    def spin() -> None:
        for frame in itertools.cycle("|/-\\"):
            sys.stderr.write(f"\r{frame} {message} {time.monotonic() - started:.0f}s ")
            sys.stderr.flush()
            if done.wait(0.1):
                break
        sys.stderr.write("\r\033[K")  # erase the line, so the answer prints on a clean one

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
