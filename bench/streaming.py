"""What streaming costs and what it gives: /v1/generate plain vs streamed, and how soon a
closed stream frees the generator.

    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python bench/streaming.py --runs 8

One Ray Serve app (the embedded default's diffusion generator alone). Each run sends
the same request (4 images, 20 steps) plainly and as an NDJSON stream, one after the
other, so both see the same machine load. Prints the medians: the plain answer's latency, the stream's time to its
first progress event and to its result, and their ratio (what the per-step events
add; a stream takes the same batched path as a plain call). Then it opens streams of a long request (100
steps), closes each after its first event, and measures the time until the
generator's replica reports the call cancelled, and the steps it ran by then.
Saves bench/results/streaming.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from harness import free_port, provenance

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

PROMPT = "a red circle to the left of a blue square on a white background"
NDJSON = "application/x-ndjson"


def plain(url: str, body: dict) -> float:
    started = time.perf_counter()
    httpx.post(url, json=body, timeout=600).raise_for_status()
    return time.perf_counter() - started


def streamed(url: str, body: dict) -> tuple[float, float]:
    """(seconds to the first progress event, seconds to the result)."""
    started = time.perf_counter()
    first = None
    with httpx.stream("POST", url, json=body, headers={"accept": NDJSON}, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            event = json.loads(line)
            if event["type"] == "progress" and first is None:
                first = time.perf_counter() - started
            if event["type"] == "result":
                return first, time.perf_counter() - started
    raise RuntimeError("the stream ended without a result")


def cancelled_after_close(url: str, body: dict, step_counts) -> tuple[float, int]:
    """(seconds from closing the stream to the generator reporting the call cancelled, steps it ran)."""
    before = step_counts()
    with httpx.stream("POST", url, json=body, headers={"accept": NDJSON}, timeout=600) as response:
        next(response.iter_lines())
    closed = time.perf_counter()
    while (after := step_counts())["cancelled"] == before["cancelled"]:
        if time.perf_counter() - closed > 120:
            raise RuntimeError("the generator never reported the call cancelled")
        time.sleep(0.05)
    return time.perf_counter() - closed, after["steps_run"] - before["steps_run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--note", default="", help="saved with the results (e.g. what else ran on the machine)")
    parser.add_argument("--out", default="bench/results/streaming.json")
    args = parser.parse_args()

    import ray
    from ray import serve

    from dalleflow.deployments.app import EMBEDDED_DIFFUSION, build_app

    ray.init(include_dashboard=False, log_to_driver=False, _temp_dir=tempfile.mkdtemp(prefix="ray-"))
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # The diffusion generator alone: its steps are what the figures are about (and were measured on).
    app_args = {"store_path": tempfile.mkdtemp(prefix="dalleflow-bench-"), "generators": {"diffusion": EMBEDDED_DIFFUSION.model_dump()}}
    serve.run(build_app(app_args), name="dalleflow", route_prefix="/")
    url = f"http://127.0.0.1:{port}/v1/generate"
    generator = serve.get_deployment_handle("generator-diffusion", app_name="dalleflow")

    def step_counts() -> dict:
        return generator.step_counts.remote().result()

    body = {"prompt": PROMPT, "num_images": 4, "num_inference_steps": 20}
    plain(url, body), streamed(url, body)  # warm
    plain_s, first_s, result_s = [], [], []
    for run in range(args.runs):
        plain_s.append(plain(url, {**body, "seed": run}))
        first, result = streamed(url, {**body, "seed": run})
        first_s.append(first)
        result_s.append(result)
    long_body = {"prompt": PROMPT, "num_images": 16, "num_inference_steps": 100}
    cancels = [cancelled_after_close(url, {**long_body, "seed": run}, step_counts) for run in range(args.runs)]
    serve.shutdown()
    ray.shutdown()

    median = statistics.median
    rows = {
        "plain_result_s": median(plain_s), "streamed_first_progress_s": median(first_s),
        "streamed_result_s": median(result_s), "streamed_over_plain": median(result_s) / median(plain_s),
        "cancel_to_stopped_s": median(c[0] for c in cancels), "cancel_steps_run_of_100": median(c[1] for c in cancels),
    }  # fmt: skip
    print(f"\n/v1/generate, 4 images, 20 steps; medians of {args.runs} interleaved runs\n")
    print(f"  plain: result after              {rows['plain_result_s']:6.2f} s")
    print(f"  streamed: first progress after   {rows['streamed_first_progress_s']:6.2f} s")
    print(f"  streamed: result after           {rows['streamed_result_s']:6.2f} s   ({rows['streamed_over_plain']:.2f}x plain)")
    print(f"\nA stream of 16 images x 100 steps closed after its first event (median of {args.runs}):")
    print(f"  generator reports it cancelled   {rows['cancel_to_stopped_s']:6.2f} s after the close")
    print(f"  steps it ran, of 100             {rows['cancel_steps_run_of_100']:6.0f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        **provenance(), "runs": args.runs, "note": args.note, "medians": rows,
        "samples": {"plain_s": plain_s, "first_progress_s": first_s, "streamed_s": result_s, "cancels": cancels},
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
