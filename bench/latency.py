"""Latency of /v1/generate, and what Ray Serve adds (issue: acceptance point 5).

    .venv/bin/python bench/latency.py --runs 20

Runs the same generate request (4 candidates per generator, default steps)
through the embedded default app on Ray Serve over HTTP, and through the very
same Flow with the models in this process (no Ray, no HTTP), interleaved so
both see the same machine load. Prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import httpx

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

PROMPT = "a red circle to the left of a blue square on a white background"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def in_process_flow(store: str):
    from dalleflow.deployments.app import AppConfig
    from dalleflow.models.factory import create_model
    from dalleflow.service.flow import Flow
    from dalleflow.service.stages import LocalStage
    from dalleflow.service.store import ImageStore

    config = AppConfig()
    refiner = LocalStage(create_model(config.refiner))
    return Flow(
        generators={name: LocalStage(create_model(spec)) for name, spec in config.generators.items()},
        ranker=LocalStage(create_model(config.ranker)), refiner=refiner,
        upscaler=LocalStage(create_model(config.upscaler)), store=ImageStore(store),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--out", default="bench/results/latency.json")
    args = parser.parse_args()

    import ray
    from dalleflow_client.schemas import GenerateRequest
    from ray import serve

    from dalleflow.deployments.app import build_app

    store = tempfile.mkdtemp(prefix="dalleflow-bench-")
    ray.init(include_dashboard=False, log_to_driver=False, _temp_dir=tempfile.mkdtemp(prefix="ray-"))
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"store_path": store}), name="dalleflow", route_prefix="/")
    url = f"http://127.0.0.1:{port}/v1/generate"
    flow = in_process_flow(store)
    body = {"prompt": PROMPT, "num_images": args.num_images, "seed": 0}

    def over_http() -> float:
        started = time.perf_counter()
        answer = httpx.post(url, json=body, timeout=300)
        answer.raise_for_status()
        return time.perf_counter() - started

    def in_process() -> float:
        started = time.perf_counter()
        asyncio.run(flow.generate(GenerateRequest(**body)))
        return time.perf_counter() - started

    for warmup in (over_http, in_process, over_http, in_process):
        warmup()
    http_times, local_times = [], []
    for _ in range(args.runs):
        http_times.append(over_http())
        local_times.append(in_process())
    serve.shutdown()
    ray.shutdown()

    http_median, local_median = statistics.median(http_times), statistics.median(local_times)
    ratio = http_median / local_median
    print(f"\n/v1/generate, {args.num_images} candidates per generator, median of {args.runs} (interleaved)")
    print(f"{'path':28} {'median s':>9} {'p90 s':>7}")
    for label, times in (("in-process Flow (no Ray)", local_times), ("Ray Serve over HTTP", http_times)):
        print(f"{label:28} {statistics.median(times):9.3f} {statistics.quantiles(times, n=10)[-1]:7.3f}")
    print(f"Serve overhead: HTTP / in-process = {ratio:.3f} ({(ratio - 1):+.1%})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"runs": args.runs, "num_images": args.num_images,
                                          "http_s": http_times, "in_process_s": local_times,
                                          "http_median_s": http_median, "in_process_median_s": local_median,
                                          "ratio": ratio}, indent=1))


if __name__ == "__main__":
    main()
