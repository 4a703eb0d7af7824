"""Fixed batch shapes, so a row's numbers never depend on its neighbours.

CPU (oneDNN, MKL, XLA's Eigen) and GPU kernels choose their algorithm, and so
their rounding, by batch size: on this project's CPU the same image came out of
the diffusion UNet with other low bits at batch 1, at 2-3, at 4-12 and at 16+.
With every call of one shape, a row's numbers depend only on that row (measured
byte-identical at any position, beside any other rows). Every family runs its
networks through one of these two helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

Row = TypeVar("Row")


def padded_chunks(rows: Sequence[Row], size: int) -> list[tuple[list[Row], int]]:
    """rows cut into chunks of exactly `size`, the last padded by repeating its
    last row: [(chunk, how many of it are real)]."""
    if size < 1:
        raise ValueError(f"images_per_call must be at least 1, got {size}")
    chunks = []
    for start in range(0, len(rows), size):
        chunk = list(rows[start : start + size])
        real = len(chunk)
        chunks.append((chunk + [chunk[-1]] * (size - real), real))
    return chunks


def run_in_fixed_rows(function: Callable, rows: int, *tensors: torch.Tensor):
    """function(*tensors), computed `rows` rows at a time, the last chunk padded
    by repeating its last row; the output rows of the padding are dropped."""
    count = tensors[0].shape[0]
    outputs = []
    for start in range(0, count, rows):
        chunk = [tensor[start : start + rows] for tensor in tensors]
        real = chunk[0].shape[0]
        if real < rows:
            chunk = [torch.cat([part, part[-1:].expand(rows - real, *part.shape[1:])]) for part in chunk]
        output = function(*chunk)
        outputs.append(tuple(o[:real] for o in output) if isinstance(output, tuple) else output[:real])
    if isinstance(outputs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outputs))
    return torch.cat(outputs)
