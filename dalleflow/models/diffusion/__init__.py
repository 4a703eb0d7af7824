from dalleflow.models.diffusion.pipeline import PixelDiffusionConfig, ShapesDiffusion
from dalleflow.models.diffusion.text_encoder import TextEncoder, TextEncoderConfig, shapes_vocab

__all__ = ["PixelDiffusionConfig", "ShapesDiffusion", "TextEncoder", "TextEncoderConfig", "shapes_vocab"]
