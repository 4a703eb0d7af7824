"""The shapes diffusion model's fixed "VAE": pixels folded into channels, plus coordinates.

pixel_unshuffle(2) turns a 32x32x3 image into 16x16x12 without losing a bit, so
the UNet runs at a quarter of the positions (4x cheaper on a CPU) with no
autoencoder to train. Two coordinate channels tell the convolutions where on
the canvas they are: "left" and "top" are absolute positions, which a
translation-equivariant network otherwise has to infer from padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from torch import nn


class PixelSpace:
    def __init__(self, factor: int = 2):
        self.factor = factor

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> [B, 3 f^2, H/f, W/f]."""
        return F.pixel_unshuffle(images, self.factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(latents, self.factor)


def coordinate_channels(batch: int, size: int, like: torch.Tensor) -> torch.Tensor:
    axis = torch.linspace(-1, 1, size, device=like.device, dtype=like.dtype)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xs, ys]).expand(batch, 2, size, size)


class CoordinateUNet(nn.Module):
    """A diffusers UNet2DConditionModel whose input carries two coordinate channels."""

    def __init__(self, unet: UNet2DConditionModel):
        super().__init__()
        self.unet = unet

    def forward(self, latents, timesteps, text_states, text_mask, pooled):
        coords = coordinate_channels(latents.shape[0], latents.shape[-1], latents)
        return self.unet(
            torch.cat([latents, coords], dim=1),
            timesteps,
            encoder_hidden_states=text_states,
            encoder_attention_mask=text_mask,
            class_labels=pooled,
        ).sample


def build_unet(width: int = 128, block_out_channels: tuple[int, ...] = (64, 96, 128)) -> UNet2DConditionModel:
    """The shapes model's UNet: 16x16 positions of 12 unshuffled channels, text
    (of `width`) by cross-attention at the two coarser levels and, pooled, beside
    the time embedding."""
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=12 + 2,  # pixel-unshuffled RGB + coordinates
        out_channels=12,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=block_out_channels,
        layers_per_block=1,
        norm_num_groups=min(16, block_out_channels[0]),
        cross_attention_dim=width,
        attention_head_dim=min(32, block_out_channels[0]),
        class_embed_type="projection",  # the pooled caption joins the time embedding
        projection_class_embeddings_input_dim=width,
    )


def noise_schedule(prediction_type: str = "epsilon") -> DDPMScheduler:
    """The schedule the model is trained on; its samplers are built from its config."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type)
