"""x4 upscaling with Swin2SR through transformers: the torch upscaler for GPUs.

    upscaler = Swin2SRUpscaler.from_pretrained("/models/swin2sr-realworld-x4")  # or a hub id
    big = upscaler.upscale(image)   # 4x the width and height (the checkpoint's `upscale`)

The weights are a transformers `save_pretrained` folder (config.json,
model.safetensors, preprocessor_config.json), such as
caidas/swin2SR-realworld-sr-x4-64-bsrgan-psnr or caidas/swin2SR-classical-sr-x4-64.
The realesrgan family stays the CPU default; this one wants a GPU for anything
larger than a thumbnail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import Swin2SRForImageSuperResolution, Swin2SRImageProcessor

from dalleflow.models.devices import default_device, resolve_dtype


class Swin2SRUpscaler:
    def __init__(self, model: Swin2SRForImageSuperResolution, processor: Swin2SRImageProcessor):
        self.model = model.eval()
        self.processor = processor
        self.scale = model.config.upscale

    @classmethod
    def from_pretrained(
        cls, source: str | Path, device: str | None = None, dtype: str | torch.dtype | None = None
    ) -> Swin2SRUpscaler:
        device = device or default_device()
        model = Swin2SRForImageSuperResolution.from_pretrained(str(source), dtype=resolve_dtype(dtype, device))
        return cls(model.to(device), Swin2SRImageProcessor.from_pretrained(str(source)))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def upscale(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        pixels = self.processor(image.convert("RGB"), return_tensors="pt").pixel_values
        pixels = pixels.to(self.device, next(self.model.parameters()).dtype)
        output = self.model(pixel_values=pixels).reconstruction[0]
        # The processor pads the bottom and right edges (always, by at least one
        # pixel); keep only what maps back to the input.
        output = output[:, : height * self.scale, : width * self.scale]
        array = (output.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(np.ascontiguousarray(array))
