"""Throughput of /v1/generate with and without batching across requests, for plain and streamed clients.

    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python bench/throughput.py --generator diffusion --steps 20

One Ray Serve app with one of the embedded default's generators alone (`--generator`:
dalle or diffusion, one replica); the generator's and the ranker's user_config
switch between batching (max_batch_size 16) and none (max_batch_size 1). At each
concurrency (1, 4, 16) both run the same requests (1 image each, few steps), one
setting after the other, from plain JSON clients and from streaming clients (NDJSON
with progress and previews, as the web page, the CLI and jobs ask). Prints
requests/s, p50/p95 latency, the ratio to unbatched, and the generator batch sizes
that formed; saves bench/results/throughput-GENERATOR.json. On a GPU machine,
`--num-gpus 1` gives the generator replica the GPU, where its model runs in half
precision unless `--dtype` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from harness import free_port, provenance

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

PROMPT = "a red circle to the left of a blue square on a white background"
SETTINGS = {"batched": 16, "unbatched": 1}  # max_batch_size
NDJSON = "application/x-ndjson"


def deployments(generator: str, max_batch_size: int, num_gpus: float = 0) -> list[dict]:
    batching = {"max_batch_size": max_batch_size, "batch_wait_timeout_s": 0.02}
    # On a GPU machine the models go to the GPU (models/devices.py) once their replica is given one.
    resources = {"ray_actor_options": {"num_cpus": 0.5, "num_gpus": num_gpus}} if num_gpus else {}
    return [{"name": f"generator-{generator}", "user_config": batching, "max_ongoing_requests": 32, **resources},
            {"name": "ranker", "user_config": batching, "max_ongoing_requests": 32}]


async def run_load(url: str, concurrency: int, request_count: int, steps: int, is_streamed: bool = False
                   ) -> tuple[float, list[float]]:
    """(seconds for all, latency of each) with `concurrency` requests in flight; a streamed
    request is done when its result event has been read."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(client: httpx.AsyncClient, seed: int) -> None:
        body = {"prompt": PROMPT, "num_images": 1, "seed": seed, "num_inference_steps": steps}
        async with gate:
            started = time.perf_counter()
            if is_streamed:
                async with client.stream("POST", url, json=body, headers={"accept": NDJSON}) as answer:
                    answer.raise_for_status()
                    last = [line async for line in answer.aiter_lines() if line][-1]
                if json.loads(last)["type"] != "result":
                    raise RuntimeError(f"the stream ended without a result: {last[:200]}")
            else:
                answer = await client.post(url, json=body)
                answer.raise_for_status()
            latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(*(one(client, seed) for seed in range(request_count)))
        return time.perf_counter() - started, latencies


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--clients", nargs="+", choices=["plain", "streamed"], default=["plain", "streamed"])
    parser.add_argument("--requests-per-slot", type=int, default=3, help="requests = max(8, this x concurrency)")
    parser.add_argument("--generator", choices=["dalle", "diffusion"], default="dalle")
    parser.add_argument("--steps", type=int, default=4, help="num_inference_steps of each request (diffusion)")
    parser.add_argument("--num-gpus", type=float, default=0, help="GPUs for the generator replica (0: CPU)")
    parser.add_argument("--dtype", default=None, help="the generator's precision (default: the model's own for its device)")
    parser.add_argument("--note", default="", help="saved with the results (e.g. what else ran on the machine)")
    parser.add_argument("--out", default=None, help="default bench/results/throughput-GENERATOR.json")
    args = parser.parse_args()

    import ray
    from ray import serve

    from dalleflow.deployments.app import EMBEDDED_DALLE, EMBEDDED_DIFFUSION, compose_app

    ray.init(include_dashboard=False, log_to_driver=False, _temp_dir=tempfile.mkdtemp(prefix="ray-"))
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    store = tempfile.mkdtemp(prefix="dalleflow-bench-")
    url = f"http://127.0.0.1:{port}/v1/generate"
    generator = serve.get_deployment_handle  # resolved after each deploy

    rows = []
    runs = [(c, setting, client) for c in args.concurrency for setting in SETTINGS for client in args.clients]
    deployed = None
    for concurrency, setting, client in runs:
        request_count = max(8, args.requests_per_slot * concurrency)
        max_batch_size = SETTINGS[setting]
        is_streamed = client == "streamed"
        if deployed != setting:
            spec = {"dalle": EMBEDDED_DALLE, "diffusion": EMBEDDED_DIFFUSION}[args.generator]
            if args.dtype:
                spec = spec.model_copy(update={"options": {**spec.options, "dtype": args.dtype}})
            # The diffusion model refines too (one deployment); the DALL·E cannot, so the refiner is the embedded diffusion.
            refiner = args.generator if args.generator == "diffusion" else EMBEDDED_DIFFUSION.model_dump()
            app_args = {"store_path": store, "generators": {args.generator: spec.model_dump()}, "refiner": refiner}
            serve.run(compose_app(app_args, deployments(args.generator, max_batch_size, args.num_gpus)), name="dalleflow", route_prefix="/")
            deployed = setting
        handle = generator(f"generator-{args.generator}", app_name="dalleflow")
        # Warm at the same concurrency, so every batch shape it forms is compiled
        # (XLA, and torch's first calls) before the clock starts.
        asyncio.run(run_load(url, concurrency, 2 * concurrency, args.steps, is_streamed))
        before = Counter(handle.batch_sizes.remote().result())
        seconds, latencies = asyncio.run(run_load(url, concurrency, request_count, args.steps, is_streamed))
        formed = Counter(handle.batch_sizes.remote().result())
        formed.subtract(before)
        rows.append({"concurrency": concurrency, "client": client, "setting": setting, "max_batch_size": max_batch_size,
                     "requests": request_count, "seconds": seconds, "requests_per_s": request_count / seconds,
                     "p50_s": percentile(latencies, 50), "p95_s": percentile(latencies, 95),
                     "batch_sizes": {int(k): v for k, v in sorted(formed.items()) if v}})
        print(f"  c={concurrency:<3} {client:8} {setting:9} {request_count / seconds:6.2f} req/s", flush=True)
    serve.shutdown()
    ray.shutdown()

    made = provenance()
    work = "64 tokens" if args.generator == "dalle" else f"{args.steps} steps"
    where = "on the GPU" if args.num_gpus else "on the CPU"
    print(f"\n/v1/generate, {args.generator}: 1 image, {work} per request; one generator replica {where}; {made['machine']}\n")
    print(f"{'conc':>4} {'client':8} {'setting':9} {'req/s':>7} {'p50 s':>7} {'p95 s':>7} {'x':>6}  "
          "generator batch sizes formed (size: count)")
    rows.sort(key=lambda r: (r["concurrency"], r["client"], r["setting"]))
    for row in rows:
        base = next(r for r in rows if (r["concurrency"], r["client"], r["setting"]) == (row["concurrency"], row["client"], "unbatched"))
        ratio = row["requests_per_s"] / base["requests_per_s"]
        row["ratio_to_unbatched"] = ratio
        print(f"{row['concurrency']:>4} {row['client']:8} {row['setting']:9} {row['requests_per_s']:7.2f} {row['p50_s']:7.2f} "
              f"{row['p95_s']:7.2f} {ratio:6.2f}  {row['batch_sizes']}")
    out = Path(args.out or f"bench/results/throughput-{args.generator}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        **made, "generator": args.generator, "steps": args.steps, "dtype": args.dtype,
        "num_gpus": args.num_gpus, "note": args.note, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
