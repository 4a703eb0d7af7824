"""Any super-resolution model spandrel recognises (SwinIR, Real-ESRGAN, Swin2SR, HAT,
DAT, ...), loaded from its original weight file: the torch upscalers people download.

    upscaler = SpandrelUpscaler.from_pretrained("/models/swinir")   # the folder of 003_realSR_..._SwinIR-L_x4_GAN.pth
    big = upscaler.upscale(image)   # the model's scale (4 for SwinIR-L x4)

spandrel reads the architecture and its hyperparameters from the state dict's keys
and shapes, and unpickles .pth files with a restricted unpickler (no code runs);
.safetensors files hold tensors only. The input is padded to the model's size
requirements and the padding cropped from the output by spandrel itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from spandrel import MAIN_REGISTRY, ImageModelDescriptor, ModelLoader, UnsupportedModelError

from dalleflow.models.devices import default_device, resolve_dtype

WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")


class SpandrelUpscaler:
    def __init__(self, descriptor: ImageModelDescriptor):
        self.descriptor = descriptor.eval()
        self.scale = descriptor.scale
        self.architecture = descriptor.architecture.name

    @classmethod
    def from_pretrained(
        cls, source: str | Path, file: str | None = None, device: str | None = None, dtype: str | torch.dtype | None = None
    ) -> SpandrelUpscaler:
        """source: a weight file, or a folder holding one (`file` names it where there are several).
        dtype: default half precision on a GPU where the architecture supports it, else float32."""
        path = weight_file(Path(source), file)
        device = device or default_device()
        try:
            descriptor = ModelLoader(device=device).load_from_file(path)
        except UnsupportedModelError:
            known = ", ".join(sorted(entry.architecture.name for entry in MAIN_REGISTRY.architectures()))
            raise ValueError(f"{path.name}: spandrel recognises no architecture in its keys; it knows {known}") from None
        if not isinstance(descriptor, ImageModelDescriptor):
            raise ValueError(f"{path.name}: a {descriptor.architecture.name} model ({descriptor.purpose}) is not an upscaler")
        wanted = resolve_dtype(dtype, device)
        supported = {torch.float32: True, torch.float16: descriptor.supports_half, torch.bfloat16: descriptor.supports_bfloat16}
        if not supported.get(wanted, False):
            if dtype is not None:
                raise ValueError(f"dtype: {descriptor.architecture.name} does not run in {wanted}")
            wanted = torch.float32  # the default half precision, where the architecture has none
        return cls(descriptor.to(wanted))

    @property
    def device(self) -> torch.device:
        return self.descriptor.device

    @torch.inference_mode()
    def upscale(self, image: Image.Image) -> Image.Image:
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
        pixels = pixels.permute(2, 0, 1)[None].to(self.device, self.descriptor.dtype)
        output = self.descriptor(pixels)[0]
        array = (output.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(np.ascontiguousarray(array))


def weight_file(source: Path, file: str | None) -> Path:
    """The weight file a source names, with an error that says what to do otherwise."""
    if source.is_file():
        return source
    if not source.is_dir():
        raise FileNotFoundError(f"weights: no file or folder at {source}")
    if file is not None:
        if not (source / file).is_file():
            raise FileNotFoundError(f"file: no {file!r} in {source}")
        return source / file
    found = sorted(path for path in source.iterdir() if path.suffix.lower() in WEIGHT_SUFFIXES)
    if len(found) != 1:
        names = [path.name for path in found] or "no weight file"
        raise ValueError(f"weights: {source} holds {names}; name one in options.file ({', '.join(WEIGHT_SUFFIXES)})")
    return found[0]
