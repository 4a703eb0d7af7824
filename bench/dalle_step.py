"""DALL·E decode speed (issue 3, acceptance 2), all in one run:

    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python bench/dalle_step.py

1. This machine's memory bandwidth (an XLA reduction and a numpy copy over 512 MB).
2. One DALL·E Mega-width decoder layer (d_model 2048, 32 heads, GLU 4096; random
   weights laid out as DalleBart.from_pretrained leaves them, one array per
   weight) for one image position, at batch 1 and 4 (2 and 8 rows: every image is
   decoded against its prompt and against "" for super-conditioning), against the
   bound that the bytes it must read (weights, self-attention cache, cross
   keys/values) put on it at that bandwidth. At batch 1 a decode step is a series of
   matrix-vector products: memory-bound, so the bound is the target.
3. Whole generations (256 positions) on the tiny test checkpoint: this port's one
   jitted program against min-dalle's PyTorch loop holding the same weights, same
   settings (top_k 256, super-conditioning 16, temperature 1), for 1 and 4 images.
   Image tokens only: min-dalle's VQGAN is fixed at the full size.

Everything runs on one core (XLA without its thread pool, torch with one thread)
and is timed in process CPU seconds as well as wall seconds: on a shared machine
the CPU time of a one-thread run is what the work itself cost, while wall time
also counts the time other processes held the core. Timings are medians after a
warm-up (compilation reported apart). Prints a table and writes
bench/results/dalle_step.json. Also times the top-k filter (lax.top_k against the
threshold search that generation uses).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from harness import provenance  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dalleflow.models.dalle import DalleBart  # noqa: E402
from dalleflow.models.dalle.bart import cross_attention_kv, decoder_layer_step  # noqa: E402

FIXTURES = ROOT / "tests" / "models" / "dalle" / "fixtures"
MEGA = dict(d_model=2048, heads=32, ffn=4096, text_length=64, image_length=256, layers=24)


CLOCK = time.process_time  # see the docstring; --wall switches to wall time


def median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = CLOCK()
        fn()
        times.append(CLOCK() - start)
    return statistics.median(times)


def bandwidth(megabytes: int, runs: int) -> dict:
    n = megabytes * 2**20 // 4
    x = jnp.asarray(np.random.default_rng(0).standard_normal(n, dtype=np.float32))
    total = jax.jit(jnp.sum)
    total(x).block_until_ready()
    xla_read = x.nbytes / median_time(lambda: total(x).block_until_ready(), runs)
    a = np.asarray(x)
    b = np.empty_like(a)
    copy = 2 * a.nbytes / median_time(lambda: np.copyto(b, a), runs)  # read + write
    return {"xla_sum_read_GBps": xla_read / 1e9, "numpy_copy_GBps": copy / 1e9}


def mega_layer(rng: np.random.Generator) -> dict:
    d, f = MEGA["d_model"], MEGA["ffn"]

    def w(*shape):
        return jax.device_put((rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[0])))

    def ln(width, scale=True):
        p = {"bias": jax.device_put(np.zeros(width, np.float32))}
        if scale:
            p["scale"] = jax.device_put(np.ones(width, np.float32))
        return p

    attn = lambda: {name: w(d, d) for name in ("q", "k", "v", "out")}  # noqa: E731
    return {
        "self_pre_ln": ln(d, False), "self_attn": attn(), "self_post_ln": ln(d),
        "cross_pre_ln": ln(d, False), "cross_attn": attn(), "cross_post_ln": ln(d),
        "glu": {"ln0": ln(d, False), "fc0": w(d, f), "fc1": w(d, f), "ln1": ln(f, False), "fc2": w(f, d)},
    }


def layer_step_bytes(layer: dict, rows: int) -> int:
    d = MEGA["d_model"]
    weights = sum(a.nbytes for a in jax.tree_util.tree_leaves(layer))
    # cross k/v weights are not read per step: their products are computed once per prompt
    weights -= layer["cross_attn"]["k"].nbytes + layer["cross_attn"]["v"].nbytes
    self_cache = 2 * rows * MEGA["image_length"] * d * 4
    cross_kv = 2 * rows * MEGA["text_length"] * d * 4
    return weights + self_cache + cross_kv


def bench_layer(layer: dict, batch: int, runs: int, read_bw: float) -> dict:
    heads, d = MEGA["heads"], MEGA["d_model"]
    rows = 2 * batch
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((rows, 1, d), dtype=np.float32))
    cache = tuple(jnp.asarray(rng.standard_normal((rows, heads, MEGA["image_length"], d // heads), dtype=np.float32)) for _ in range(2))
    states = jnp.asarray(rng.standard_normal((rows, MEGA["text_length"], d), dtype=np.float32))
    cross_kv = cross_attention_kv(states, layer, heads)
    cross_mask = jnp.ones((rows, 1, 1, MEGA["text_length"]), bool)
    position = jnp.int32(128)
    step = jax.jit(decoder_layer_step, static_argnames=("heads",))
    run = lambda: jax.block_until_ready(step(x, layer, position, cache, cross_kv, cross_mask, heads=heads))  # noqa: E731
    start = CLOCK()
    run()
    compile_s = CLOCK() - start
    seconds = median_time(run, runs)
    nbytes = layer_step_bytes(layer, rows)
    bound = nbytes / read_bw
    return {
        "batch": batch, "rows": rows, "ms_per_step": seconds * 1e3, "MB_read": nbytes / 1e6,
        "bound_ms": bound * 1e3, "fraction_of_bound": bound / seconds, "compile_s": compile_s,
        "mega_ms_per_position_estimate": seconds * 1e3 * MEGA["layers"],
    }


def bench_top_k(runs: int, rows: int = 4, k: int = 256) -> dict:
    """The per-step filter over 16384 codes: lax.top_k's k-th value against the
    threshold search (sampling.top_k_mask); both give the same mask."""
    from dalleflow.models.dalle.sampling import top_k_mask

    logits = jnp.asarray(np.random.default_rng(2).standard_normal((rows, 16384), dtype=np.float32))
    by_top_k = jax.jit(lambda x: x >= jax.lax.top_k(x, k)[0][:, -1:])
    by_search = jax.jit(lambda x: top_k_mask(x, k))
    assert bool(jnp.all(by_top_k(logits) == by_search(logits)))
    top_k_s = median_time(lambda: by_top_k(logits).block_until_ready(), runs * 10)
    search_s = median_time(lambda: by_search(logits).block_until_ready(), runs * 10)
    return {"rows": rows, "k": k, "lax_top_k_ms_per_row": top_k_s * 1e3 / rows,
            "threshold_search_ms_per_row": search_s * 1e3 / rows, "speedup": top_k_s / search_s}


def min_dalle_tokens(encoder, decoder, ids: np.ndarray, images: int, seed: int) -> np.ndarray:
    """min-dalle's MinDalle.generate_raw_image_stream token loop, minus its tokenizer,
    downloads and VQGAN (start token 16383 kept as it has it)."""
    import torch

    text_tokens = torch.from_numpy(ids).long()  # [prompt; ""], its encoder's two rows
    with torch.no_grad():
        encoder_state = encoder(text_tokens)
        expanded = [0] * images + [1] * images
        text_tokens, encoder_state = text_tokens[expanded], encoder_state[expanded]
        attention_mask = text_tokens.not_equal(1)[:, None, None, :]
        attention_state = torch.zeros(decoder.layer_count, images * 4, 256, decoder.embed_count)
        image_tokens = torch.full((images, 257), 2**14 - 1, dtype=torch.long)
        torch.manual_seed(seed)
        token_indices = torch.arange(256)
        settings = torch.tensor([1.0, 256, 16.0], dtype=torch.float32)
        for i in range(256):
            image_tokens[:, i + 1], attention_state = decoder.sample_tokens(
                settings=settings, attention_mask=attention_mask, encoder_state=encoder_state,
                attention_state=attention_state, prev_tokens=image_tokens[:, [i]], token_index=token_indices[[i]],
            )
    return image_tokens[:, 1:].numpy()


def bench_generate(runs: int) -> list[dict]:
    import torch

    sys.path.insert(0, str(ROOT / "tests" / "models" / "dalle"))
    import min_dalle_weights

    golden = dict(np.load(FIXTURES / "golden.npz"))
    model = DalleBart.from_pretrained(FIXTURES / "dalle-tiny")
    encoder, decoder = min_dalle_weights.min_dalle_bart(min_dalle_weights.import_min_dalle_models(), model)
    ids, mask = golden["input_ids"][:1], golden["attention_mask"][:1]
    uncond = golden["uncond_input_ids"], golden["uncond_attention_mask"]
    results = []
    for images in (1, 4):
        ours = lambda: model.generate(ids, mask, *uncond, num_images=images, seed=0, top_k=256, condition_scale=16.0)  # noqa: E731
        start = CLOCK()
        ours()
        compile_s = CLOCK() - start
        ours_s = median_time(ours, runs)
        pair = np.concatenate([ids, uncond[0]])
        theirs_s = median_time(lambda: min_dalle_tokens(encoder, decoder, pair, images, seed=1), max(1, runs // 2))
        results.append({
            "images": images, "ours_s": ours_s, "ours_compile_s": compile_s, "min_dalle_s": theirs_s,
            "speedup": theirs_s / ours_s, "torch_threads": torch.get_num_threads(),
        })
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--bandwidth-mb", type=int, default=512)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dalle_step.json")
    parser.add_argument("--wall", action="store_true", help="time in wall seconds instead of CPU seconds")
    parser.add_argument("--skip-layer", action="store_true", help="only the whole-generation comparison")
    parser.add_argument("--skip-generate", action="store_true", help="only bandwidth and the Mega layer")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.wall else time.process_time
    import torch

    torch.set_num_threads(1)

    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cores, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"timed in {'wall' if args.wall else 'process CPU'} seconds, load average {os.getloadavg()[0]:.1f}")
    results: dict = {**provenance(), "clock": "wall" if args.wall else "process_cpu",
                     "loadavg_at_start": os.getloadavg()[0]}
    if not args.skip_layer:
        results.update(layer_section(args))
    if not args.skip_generate:
        results["tiny_generate"] = generate_section(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


def layer_section(args) -> dict:
    bw = bandwidth(args.bandwidth_mb, args.runs)
    read_bw = max(bw["xla_sum_read_GBps"], bw["numpy_copy_GBps"]) * 1e9
    print(f"\nmemory bandwidth: XLA sum read {bw['xla_sum_read_GBps']:.1f} GB/s, "
          f"numpy copy (read+write) {bw['numpy_copy_GBps']:.1f} GB/s; bound uses {read_bw / 1e9:.1f} GB/s")

    layer = mega_layer(np.random.default_rng(0))
    steps = [bench_layer(layer, batch, args.runs, read_bw) for batch in (1, 4)]
    print("\nMega-width decoder layer, one position (d 2048, 32 heads, GLU 4096, float32)")
    print(f"{'batch':>5} {'rows':>4} {'ms/step':>8} {'MB read':>8} {'bound ms':>9} {'of bound':>9} {'x24 layers ms':>14}")
    for r in steps:
        print(f"{r['batch']:>5} {r['rows']:>4} {r['ms_per_step']:>8.2f} {r['MB_read']:>8.1f} {r['bound_ms']:>9.2f} "
              f"{r['fraction_of_bound']:>8.0%} {r['mega_ms_per_position_estimate']:>14.0f}")

    return {"bandwidth": bw, "mega_layer_step": steps}


def generate_section(args) -> dict:
    top_k = bench_top_k(args.runs)
    print(f"\ntop-k filter over 16384 codes, k {top_k['k']}: lax.top_k {top_k['lax_top_k_ms_per_row']:.3f} ms/row, "
          f"threshold search {top_k['threshold_search_ms_per_row']:.3f} ms/row ({top_k['speedup']:.1f}x)")
    gens = bench_generate(args.runs)
    print("\nwhole generation, tiny checkpoint (2+2 layers, d 16), 256 positions, top_k 256, scale 16")
    print(f"{'images':>6} {'ours s':>8} {'min-dalle s':>12} {'speedup':>8} {'(compile s)':>12}")
    for r in gens:
        print(f"{r['images']:>6} {r['ours_s']:>8.3f} {r['min_dalle_s']:>12.3f} {r['speedup']:>7.1f}x {r['ours_compile_s']:>12.1f}")
    return {"top_k_filter": top_k, "runs": gens}


if __name__ == "__main__":
    main()
