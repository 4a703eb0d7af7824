"""Latency of /v1/generate, and what Ray Serve adds (issue: acceptance point 5).

    .venv/bin/python bench/latency.py --runs 20

The same generate request (4 candidates per generator, default steps) three ways:
the very Flow the ingress runs, with the config's models in one process and no
Ray running, twice (with torch's and XLA's default threads, and with one thread
per model, as Serve runs each replica: the faster here, since torch's threads
from a worker thread and XLA's pool fight over 2 cores); then the served default
itself, started as the README's first command starts it (`dalleflow serve`,
serve_config.yaml), over HTTP. Each for the request to every generator (what the
service answers by default) and to each generator alone. Prints the medians side
by side and the ratio of HTTP to the faster in-process one.

The phases run one after the other, each baseline in a process of its own (thread
settings are fixed when torch and JAX start; Ray's processes, even idle, slow a
model beside them, so they are not up then): run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from dalleflow.cli import is_ready
from harness import free_port, provenance

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a red circle to the left of a blue square on a white background"
BASELINES = {  # in-process thread settings: name -> environment
    "default threads": {},
    "1 thread/model": {"OMP_NUM_THREADS": "1",
                       "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"},
}


def request_body(generators: str, num_images: int) -> dict:
    return {"prompt": PROMPT, "num_images": num_images, "seed": 0,
            "generators": None if generators == "all" else [generators]}


def timed(call, runs: int) -> list[float]:
    call()  # warm-up: first calls compile (JAX) and fill caches
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def in_process(config_path: Path, sets: list[str], num_images: int, runs: int) -> dict[str, list[float]]:
    """The ingress's Flow over the config's models, here: no Ray, no HTTP, no serialisation."""
    from dalleflow_client.schemas import GenerateRequest

    from dalleflow.deployments.app import AppConfig
    from dalleflow.models.factory import create_model
    from dalleflow.service.flow import Flow
    from dalleflow.service.stages import LocalStage
    from dalleflow.service.store import ImageStore

    args = yaml.safe_load(config_path.read_text())["applications"][0]["args"]
    config = AppConfig.model_validate({**args, "store_path": tempfile.mkdtemp(prefix="dalleflow-bench-")})
    generators = {name: LocalStage(create_model(spec)) for name, spec in config.generators.items()}
    shared = config.refining_generator()
    flow = Flow(
        generators=generators, ranker=LocalStage(create_model(config.ranker)),
        refiner=generators[shared] if shared else LocalStage(create_model(config.refiner)),
        upscaler=LocalStage(create_model(config.upscaler)), store=ImageStore(config.store_path),
        generator_timeout_s=config.generator_timeout_s,
    )
    return {name: timed(lambda: asyncio.run(flow.generate(GenerateRequest(**request_body(name, num_images)))), runs)
            for name in sets}


def over_http(config_path: Path, sets: list[str], num_images: int, runs: int) -> dict[str, list[float]]:
    """The served default, started as `dalleflow serve` starts it, over HTTP."""
    port = free_port()
    environment = {**os.environ, "RAY_AUTH_MODE": "disabled", "DALLEFLOW_STORE": tempfile.mkdtemp(prefix="dalleflow-bench-")}
    server = subprocess.Popen([str(Path(sys.executable).parent / "dalleflow"), "serve", "--config", str(config_path),
                               "--port", str(port)], env=environment, cwd=ROOT, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while not is_ready(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dalleflow serve did not come up at {url}")
            time.sleep(1)
        with httpx.Client(timeout=300) as client:
            def generate(name: str) -> None:
                client.post(f"{url}/v1/generate", json=request_body(name, num_images)).raise_for_status()

            return {name: timed(lambda: generate(name), runs) for name in sets}
    finally:
        os.killpg(server.pid, signal.SIGINT)  # `serve run` shuts Serve and Ray down on SIGINT
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def in_process_elsewhere(environment: dict, args: argparse.Namespace) -> dict[str, list[float]]:
    """The in-process phase in a child process started with these thread settings."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, __file__, "--in-process-to", out.name, "--runs", str(args.runs),
                        "--num-images", str(args.num_images), "--config", str(args.config),
                        "--generators", *args.generators], env={**os.environ, **environment}, check=True)  # fmt: skip
        return json.loads(Path(out.name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--generators", nargs="+", default=["all", "diffusion", "dalle"],
                        help="requests to measure: 'all' (generators null) or one generator's name")
    parser.add_argument("--config", type=Path, default=ROOT / "dalleflow" / "serve_config.yaml")
    parser.add_argument("--out", default="bench/results/latency.json")
    parser.add_argument("--in-process-to", help=argparse.SUPPRESS)  # the child's side of in_process_elsewhere
    args = parser.parse_args()
    if args.in_process_to:
        Path(args.in_process_to).write_text(json.dumps(in_process(args.config, args.generators, args.num_images, args.runs)))
        return

    local = {name: in_process_elsewhere(environment, args) for name, environment in BASELINES.items()}
    http = over_http(args.config, args.generators, args.num_images, args.runs)

    median = statistics.median
    print(f"\n/v1/generate, {args.num_images} candidates per generator, median of {args.runs} (p90 in brackets), seconds")
    print(f"{'generators':11}" + "".join(f"{'in-process, ' + name:>30}" for name in BASELINES)
          + f"{'Serve over HTTP':>18}{'HTTP / faster in-process':>26}")
    results = {}
    for name in args.generators:
        fastest = min(median(times[name]) for times in local.values())
        ratio = median(http[name]) / fastest
        cells = [*(times[name] for times in local.values()), http[name]]
        print(f"{name:11}" + "".join(f"{median(t):>22.3f} ({statistics.quantiles(t, n=10)[-1]:.3f})" for t in cells[:-1])
              + f"{median(cells[-1]):>10.3f} ({statistics.quantiles(cells[-1], n=10)[-1]:.3f})"
              + f"{ratio:>16.3f} ({ratio - 1:+.1%})")
        results[name] = {"in_process_s": {baseline: times[name] for baseline, times in local.items()},
                         "http_s": http[name], "http_median_s": median(http[name]),
                         "fastest_in_process_median_s": fastest, "ratio": ratio}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**provenance(), "config": os.path.relpath(args.config, ROOT),
                                          "runs": args.runs, "num_images": args.num_images,
                                          "baselines": BASELINES, "generators": results}, indent=1))

if __name__ == "__main__":
    main()
