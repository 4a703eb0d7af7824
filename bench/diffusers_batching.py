"""A diffusers model served batched, served unbatched, and called by hand through
diffusers' own pipeline, side by side in one run on the same device.

    .venv/bin/python bench/diffusers_batching.py --size sdxl --num-gpus 1            # on a GPU machine
    OMP_NUM_THREADS=1 .venv/bin/python bench/diffusers_batching.py --size tiny       # a smoke run on a CPU

The model is a random pipeline saved as a diffusers folder: `--size sdxl` has
SDXL base's UNet, text encoders and VAE at their real sizes (2.6 B parameters in the
UNet; random weights cost what real ones cost), `--size tiny` the tests' tiny SDXL.
At each concurrency (1, 4, 16), `--requests-per-slot` x concurrency requests of one
image each run four ways:

- served batched: /v1/generate on a Serve app with the model as its one generator
  (family diffusers, images_per_call = `--images-per-call`), max_batch_size 16;
- served unbatched: the same app with max_batch_size 1;
- diffusers per request: the pipeline called once per request, one after another,
  in this process (what a server without batching does at best);
- diffusers all at once: the pipeline called once with every request's row in it
  (the most a batch can give, with no server around it).

Prints requests/s, p50 latency and the ratio to served unbatched; saves
bench/results/diffusers-batching-SIZE.json with the device named.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from harness import free_port, provenance
from throughput import PROMPT, percentile, run_load

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"served batched": 16, "served unbatched": 1}  # max_batch_size


def sdxl_size_pipeline(tokenizer_folder: Path):
    """SDXL base 1.0's architecture (its published configs) with random weights."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    sys.path.insert(0, str(REPO))
    from tests.tiny_checkpoints import write_sd_tokenizer

    write_sd_tokenizer(tokenizer_folder)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
        cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, sample_size=1024,
        scaling_factor=0.13025, force_upcast=True,
    )
    clip_l = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                            projection_dim=768, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    clip_g = CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                            projection_dim=1280, hidden_act="gelu", bos_token_id=0, eos_token_id=1, pad_token_id=1)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_folder)
    return StableDiffusionXLPipeline(
        unet=unet, vae=vae, text_encoder=CLIPTextModel(clip_l), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(clip_g), tokenizer_2=tokenizer,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                         timestep_spacing="leading", steps_offset=1),
    )  # fmt: skip


def save_model(size: str, folder: Path) -> Path:
    sys.path.insert(0, str(REPO))
    if size == "tiny":
        from tests.tiny_checkpoints import save_tiny_pipeline

        return save_tiny_pipeline("sdxl", folder)
    pipeline = sdxl_size_pipeline(folder / "vocab")
    pipeline.save_pretrained(folder / "checkpoint")
    return folder / "checkpoint"


def by_hand(checkpoint: Path, args) -> list[dict]:
    """diffusers' own pipeline, per request and all at once (the same model class the service loads)."""
    import torch

    from dalleflow.models.devices import default_device, resolve_dtype
    from diffusers import AutoPipelineForText2Image

    device = default_device()
    pipeline = AutoPipelineForText2Image.from_pretrained(checkpoint, dtype=resolve_dtype(args.dtype, device)).to(device)
    pipeline.set_progress_bar_config(disable=True)

    def call(rows: int) -> None:
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in range(rows)]
        pipeline([PROMPT] * rows, generator=generators, num_inference_steps=args.steps,
                 height=args.image_size, width=args.image_size)  # fmt: skip

    call(1)  # warm: the first call's kernel choices and allocations
    rows = []
    for concurrency in args.concurrency:
        rows += _by_hand_at(call, concurrency, args.requests_per_slot * concurrency)
    del pipeline
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def _by_hand_at(call, concurrency: int, request_count: int) -> list[dict]:
    rows = []
    latencies, started = [], time.perf_counter()
    for _ in range(request_count):
        # Request i, arriving with the others at time 0, is answered once the i before it are.
        call(1)
        latencies.append(time.perf_counter() - started)
    rows.append(_row(concurrency, "diffusers per request", request_count, time.perf_counter() - started, latencies))
    call(min(request_count, concurrency))
    started = time.perf_counter()
    for start in range(0, request_count, concurrency):
        call(min(concurrency, request_count - start))
    seconds = time.perf_counter() - started
    per_call = seconds / -(-request_count // concurrency)
    rows.append(_row(concurrency, "diffusers all at once", request_count, seconds, [per_call] * request_count))
    return rows


def _row(concurrency: int, setting: str, requests: int, seconds: float, latencies: list[float]) -> dict:
    return {"concurrency": concurrency, "setting": setting, "requests": requests, "seconds": seconds,
            "requests_per_s": requests / seconds, "p50_s": percentile(latencies, 50), "p95_s": percentile(latencies, 95)}


def served(checkpoint: Path, args) -> list[dict]:
    import ray
    from ray import serve

    from dalleflow.deployments.app import compose_app

    ray.init(include_dashboard=False, log_to_driver=False, _temp_dir=tempfile.mkdtemp(prefix="ray-"))
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}/v1/generate"
    options = {"images_per_call": args.images_per_call, "image_size": args.image_size}
    if args.dtype:
        options["dtype"] = args.dtype
    app_args = {"store_path": tempfile.mkdtemp(prefix="dalleflow-bench-"), "refiner": "sdxl",
                "generators": {"sdxl": {"family": "diffusers", "weights": f"local-dir:{checkpoint}", "options": options}}}
    resources = {"num_cpus": 0.5, "num_gpus": args.num_gpus} if args.num_gpus else {"num_cpus": 0.5}
    rows = []
    try:
        for setting, max_batch_size in SETTINGS.items():
            batching = {"max_batch_size": max_batch_size, "batch_wait_timeout_s": 0.02}
            serve.run(compose_app(app_args, [
                {"name": "generator-sdxl", "user_config": batching, "max_ongoing_requests": 32, "ray_actor_options": resources},
                {"name": "ranker", "user_config": batching, "max_ongoing_requests": 32},
            ]), name="dalleflow", route_prefix="/")  # fmt: skip
            for concurrency in args.concurrency:
                request_count = args.requests_per_slot * concurrency
                asyncio.run(run_load(url, concurrency, concurrency, args.steps))  # warm at this batch shape
                seconds, latencies = asyncio.run(run_load(url, concurrency, request_count, args.steps))
                rows.append(_row(concurrency, setting, request_count, seconds, latencies))
                print(f"  c={concurrency:<3} {setting:22} {request_count / seconds:6.2f} req/s", flush=True)
            serve.delete("dalleflow")
    finally:
        serve.shutdown()
        ray.shutdown()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["sdxl", "tiny"], default="sdxl")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests-per-slot", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=None, help="default 1024 (sdxl), 32 (tiny)")
    parser.add_argument("--images-per-call", type=int, default=None, help="the served model's fixed rows (default 8 on a GPU, 1 on a CPU)")
    parser.add_argument("--num-gpus", type=float, default=0, help="GPUs for the generator replica (0: CPU)")
    parser.add_argument("--dtype", default=None, help="default float16 on a GPU, float32 on a CPU")
    parser.add_argument("--out", default=None, help="default bench/results/diffusers-batching-SIZE.json")
    args = parser.parse_args()
    args.image_size = args.image_size or (1024 if args.size == "sdxl" else 32)

    checkpoint = save_model(args.size, Path(tempfile.mkdtemp(prefix="dalleflow-bench-")))
    rows = served(checkpoint, args) + by_hand(checkpoint, args)

    made = provenance()
    print(f"\n{args.size} ({args.image_size} px, {args.steps} steps), 1 image per request; {made['machine']}\n")
    print(f"{'conc':>4} {'setting':22} {'req/s':>7} {'p50 s':>7} {'p95 s':>7} {'x served unbatched':>19}")
    order = [*SETTINGS, "diffusers per request", "diffusers all at once"]
    rows.sort(key=lambda r: (r["concurrency"], order.index(r["setting"])))
    for row in rows:
        base = next(r for r in rows if (r["concurrency"], r["setting"]) == (row["concurrency"], "served unbatched"))
        row["ratio_to_served_unbatched"] = row["requests_per_s"] / base["requests_per_s"]
        print(f"{row['concurrency']:>4} {row['setting']:22} {row['requests_per_s']:7.2f} {row['p50_s']:7.2f} "
              f"{row['p95_s']:7.2f} {row['ratio_to_served_unbatched']:19.2f}")
    out = Path(args.out or f"bench/results/diffusers-batching-{args.size}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**made, "size": args.size, "image_size": args.image_size, "steps": args.steps,
                               "images_per_call": args.images_per_call, "dtype": args.dtype,
                               "num_gpus": args.num_gpus, "rows": rows}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
