"""Writes the tiny SwinIR fixtures of tests/models/test_spandrel_upscaler.py with SwinIR's
own code: a randomly initialised SwinIR-L-shaped network (real-world SR x4, 'nearest+conv'
upsampler, '3conv' residual connection, as 003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN)
at a tiny width, saved as the published files are ({"params_ema": state_dict} in a .pth),
and the original network's output for a fixed input.

    git clone https://github.com/JingyunLiang/SwinIR /tmp/SwinIR      # a scratch folder, never committed
    pip install --target /tmp/timm-lib --no-deps timm                  # network_swinir.py imports timm
    PYTHONPATH=/tmp/timm-lib .venv/bin/python scripts/make_swinir_fixtures.py /tmp/SwinIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "tests" / "models" / "upscaler_fixtures"
# SwinIR-L's hyperparameters (main_test_swinir.py, task real_sr, large_model) at a tiny size.
TINY_SWINIR_L = dict(upscale=4, in_chans=3, img_size=32, window_size=8, img_range=1.0, depths=[2, 2], embed_dim=16,
                     num_heads=[2, 2], mlp_ratio=2, upsampler="nearest+conv", resi_connection="3conv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("swinir_checkout", type=Path, help="a checkout of github.com/JingyunLiang/SwinIR")
    args = parser.parse_args()
    sys.path.insert(0, str(args.swinir_checkout / "models"))
    from network_swinir import SwinIR

    torch.manual_seed(0)
    network = SwinIR(**TINY_SWINIR_L).eval()
    folder = OUT / "swinir-l-tiny-x4"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": network.state_dict()}, folder / "swinir_l_tiny_x4.pth")
    # A window-size multiple, so the original network needs none of the padding callers add.
    image = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        output = network(image)
    save_file({"input": image.contiguous(), "output": output.contiguous()}, OUT / "swinir-l-tiny-x4-io.safetensors")
    print(f"wrote {folder} and the original network's output {tuple(output.shape)}")


if __name__ == "__main__":
    main()
