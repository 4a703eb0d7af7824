from dalleflow.models.upscaler.realesrgan import RealEsrganUpscaler, UpscalerUnavailable

__all__ = ["RealEsrganUpscaler", "UpscalerUnavailable"]
