"""GLID-3 XL from its original files (convert.py) on diffusers parts (model.py)."""

from dalleflow.models.glid3.model import Glid3

__all__ = ["Glid3"]
