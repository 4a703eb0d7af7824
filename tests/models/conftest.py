"""Tiny, seeded, randomly initialised models built by the same code as the real ones."""

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from dalleflow.models.diffusion import PixelDiffusionConfig, ShapesDiffusion, TextEncoder, TextEncoderConfig, shapes_vocab
from dalleflow.train.diffusion import build_unet, training_scheduler


@pytest.fixture(scope="session")
def tiny_diffusion() -> ShapesDiffusion:
    torch.manual_seed(0)
    text = TextEncoder(TextEncoderConfig(vocab=shapes_vocab(), width=16, layers=1, heads=2))
    unet = build_unet(width=16, block_out_channels=(8, 16, 16))
    scheduler = DPMSolverMultistepScheduler.from_config(training_scheduler().config)
    return ShapesDiffusion(unet, text, scheduler, PixelDiffusionConfig())
