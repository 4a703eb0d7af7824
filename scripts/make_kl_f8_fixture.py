"""Writes tests/models/glid3_fixtures/kl-f8-tiny.pt: a tiny kl-f8 autoencoder pickled as a
whole module object, as GLID-3 XL's kl-f8.pt is (torch.save of latent diffusion's
ldm.models.autoencoder.AutoencoderKL), built from latent diffusion's own Encoder and
Decoder, and what they compute (a latent's decode, an image's posterior mean).

    git clone https://github.com/CompVis/latent-diffusion /tmp/ldm     # a scratch folder, never committed
    .venv/bin/python scripts/make_kl_f8_fixture.py /tmp/ldm

latent diffusion's AutoencoderKL is a pytorch_lightning module; a class of the same
module path and name holding the same submodules stands in for it here, so the pickle
names `ldm.models.autoencoder.AutoencoderKL` as the published file does.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "tests" / "models" / "glid3_fixtures"
# kl-f8's ddconfig (models/first_stage_models/kl-f8/config.yaml) at a tiny width: 4 levels (the factor 8).
TINY_DDCONFIG = dict(double_z=True, z_channels=4, resolution=64, in_channels=3, out_ch=3, ch=32,
                     ch_mult=[1, 1, 1, 1], num_res_blocks=1, attn_resolutions=[], dropout=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ldm_checkout", type=Path, help="a checkout of github.com/CompVis/latent-diffusion")
    args = parser.parse_args()
    sys.path.insert(0, str(args.ldm_checkout))
    from ldm.modules.diffusionmodules.model import Decoder, Encoder

    module = types.ModuleType("ldm.models.autoencoder")

    class AutoencoderKL(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Encoder(**TINY_DDCONFIG)
            self.decoder = Decoder(**TINY_DDCONFIG)
            self.quant_conv = torch.nn.Conv2d(2 * TINY_DDCONFIG["z_channels"], 8, 1)
            self.post_quant_conv = torch.nn.Conv2d(4, TINY_DDCONFIG["z_channels"], 1)
            self.embed_dim = 4

    AutoencoderKL.__module__ = module.__name__
    AutoencoderKL.__qualname__ = "AutoencoderKL"
    module.AutoencoderKL = AutoencoderKL
    sys.modules[module.__name__] = module
    torch.manual_seed(0)
    autoencoder = AutoencoderKL().eval()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.save(autoencoder, OUT / "kl-f8-tiny.pt")

    generator = torch.Generator().manual_seed(2)
    latent = torch.randn(1, 4, 4, 4, generator=generator)
    image = torch.rand(1, 3, 32, 32, generator=generator) * 2 - 1
    with torch.no_grad():
        decoded = autoencoder.decoder(autoencoder.post_quant_conv(latent))
        mean = autoencoder.quant_conv(autoencoder.encoder(image)).chunk(2, dim=1)[0]
    save_file({"latent": latent, "decoded": decoded.contiguous(), "image": image, "mean": mean.contiguous()},
              OUT / "kl-f8-tiny-io.safetensors")  # fmt: skip
    print(f"wrote {OUT / 'kl-f8-tiny.pt'}")


if __name__ == "__main__":
    main()
