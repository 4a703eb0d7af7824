from dalleflow.models.diffusion.pipeline import Interrupted, PixelDiffusionConfig, ShapesDiffusion
from dalleflow.models.diffusion.text_encoder import TextEncoder, TextEncoderConfig, shapes_vocab

__all__ = ["Interrupted", "PixelDiffusionConfig", "ShapesDiffusion", "TextEncoder", "TextEncoderConfig", "shapes_vocab"]
