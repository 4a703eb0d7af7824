"""Where a torch model runs, and in which precision, when its config does not say.

Under Ray, CUDA_VISIBLE_DEVICES holds only the GPUs the replica was given, so
"cuda" is the GPU Ray assigned; without one the same config runs on the CPU.
"""

from __future__ import annotations

import torch


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """A dtype from a config string ("float16", "bfloat16", ...) or, when none is
    given, half precision on a GPU (half the memory, tensor cores) and float32
    on a CPU (where half precision is slow or unsupported)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown torch dtype {dtype!r}; e.g. 'float16', 'bfloat16', 'float32'")
    return resolved
