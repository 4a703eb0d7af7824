"""Writes the tiny GLID-3 XL fixtures of tests/models/test_glid3.py with GLID-3 XL's own
code: randomly initialised networks of its architecture at a tiny width, saved as the
published files are (state dicts: bert.pt, diffusion.pt without and finetune.pt with
`clip_proj`), and what the original code computes from them: the BERT's embeddings, the
UNet's eps at two timesteps with context (and CLIP embedding), and two complete DDIM runs
from fixed noise with classifier-free guidance as its sampler does it (text to image, and
from an init latent at skip 50%).

    git clone https://github.com/jina-ai/glid-3-xl /tmp/glid3     # dalle-flow's fork; a scratch folder, never committed
    .venv/bin/python scripts/make_glid3_fixtures.py /tmp/glid3      # needs einops (installed with spandrel)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "tests" / "models" / "glid3_fixtures"
# GLID-3 XL's model_params (dalle_flow_glid3/model.py) at a tiny width: 32 channels (its
# GroupNorm has 32 groups) instead of 320, multipliers 1,2 instead of 1,2,4,4, a 2-layer
# BERT of width 32 instead of 32 layers of 1280, a CLIP embedding of 16 instead of 768.
TINY_UNET = dict(image_size=32, num_channels=32, num_res_blocks=2, channel_mult="1,2", num_heads=8,
                 attention_resolutions="32,16", context_dim=32, learn_sigma=False, class_cond=False,
                 use_checkpoint=False, use_scale_shift_norm=False, resblock_updown=False, use_fp16=False)
TINY_BERT = dict(n_embed=32, n_layer=2, vocab_size=120, max_seq_len=77)
CLIP_DIM = 16
GUIDANCE = 5.0
DDIM_STEPS = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("glid3_checkout", type=Path, help="a checkout of github.com/jina-ai/glid-3-xl")
    args = parser.parse_args()
    sys.path.insert(0, str(args.glid3_checkout))
    from dalle_flow_glid3.encoders.modules import BERTEmbedder
    from dalle_flow_glid3.guided_diffusion.script_util import create_gaussian_diffusion, create_model

    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    bert = BERTEmbedder(**TINY_BERT, device="cpu", use_tokenizer=False).eval()
    plain = create_model(**TINY_UNET, clip_embed_dim=None).eval()
    finetune = create_model(**TINY_UNET, clip_embed_dim=CLIP_DIM).eval()
    for network in (bert, plain, finetune):
        for parameter in network.parameters():
            if not parameter.abs().sum():  # zero-initialised output layers would hide half the network
                torch.nn.init.normal_(parameter, std=0.05)
            # Saved in half precision (half the repo's bytes); the original code runs on the same rounded values.
            parameter.data = parameter.data.half().float()
    torch.save(bert.half().state_dict(), OUT / "bert.pt")
    torch.save(plain.half().state_dict(), OUT / "diffusion.pt")
    torch.save(finetune.half().state_dict(), OUT / "finetune.pt")
    for network in (bert, plain, finetune):
        network.float()

    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, TINY_BERT["vocab_size"], (2, 77), generator=generator)
    tokens[:, 9:] = 0  # padding, as bert-base-uncased's tokenizer pads to 77
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    clip = torch.randn(2, CLIP_DIM, generator=generator)
    timesteps = torch.tensor([999.0, 421.0])
    noise = torch.randn(2, 4, 8, 8, generator=generator)
    init = torch.randn(2, 4, 8, 8, generator=generator)
    with torch.no_grad():
        context = bert.encode(tokens)
        eps_plain = plain(latents, timesteps, context=context)
        eps_finetune = finetune(latents, timesteps, context=context, clip_embed=clip)
        diffusion = create_gaussian_diffusion(steps=1000, noise_schedule="linear", rescale_timesteps=True,
                                              timestep_respacing=f"ddim{DDIM_STEPS}")  # fmt: skip
        # Row 0 conditioned on tokens[0] / clip[0], row 1 the unconditional half (tokens[1] / clip[1]).
        kwargs = {"context": context, "clip_embed": clip}

        def guided(x_t, ts, **model_kwargs):  # dalle_flow_glid3/sample.py's model_fn, line for line
            half = x_t[: len(x_t) // 2]
            combined = torch.cat([half, half], dim=0)
            model_out = finetune(combined, ts, **model_kwargs)
            eps, rest = model_out[:, :3], model_out[:, 3:]
            cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
            half_eps = uncond_eps + GUIDANCE * (cond_eps - uncond_eps)
            eps = torch.cat([half_eps, half_eps], dim=0)
            return torch.cat([eps, rest], dim=1)

        def ddim(**options):
            *_, last = diffusion.ddim_sample_loop_progressive(
                guided, (2, 4, 8, 8), noise=noise.clone(), clip_denoised=False, model_kwargs=kwargs, eta=0.0,
                device="cpu", **options)
            return last["sample"][:1]

        text_to_image = ddim()
        from_init = ddim(init_image=init, skip_timesteps=DDIM_STEPS // 2)
    save_file({
        "tokens": tokens, "bert": context.contiguous(), "latents": latents, "clip": clip, "timesteps": timesteps,
        "eps_plain": eps_plain.contiguous(), "eps_finetune": eps_finetune.contiguous(), "noise": noise, "init": init,
        "ddim_text_to_image": text_to_image.contiguous(), "ddim_from_init": from_init.contiguous(),
    }, OUT / "expected.safetensors")  # fmt: skip
    (OUT / "settings.json").write_text(json.dumps({
        "unet": TINY_UNET, "bert": TINY_BERT, "clip_dim": CLIP_DIM, "guidance_scale": GUIDANCE,
        "ddim_steps": DDIM_STEPS, "skip_rate": 0.5, "source": "github.com/jina-ai/glid-3-xl",
    }, indent=1) + "\n")  # fmt: skip
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
