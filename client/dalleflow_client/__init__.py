"""Client of the dalleflow text-to-image service: httpx, anyio, pydantic, pillow and tqdm, nothing heavier.

    from dalleflow_client import Client

    with Client() as client:
        result = client.generate("a red circle on a white background", num_images=2)
        result.grid().save("grid.png")
"""

from .client import DEFAULT_BASE_URL, AsyncClient, Client, ImageInput
from .errors import DalleflowError, RequestError, TransportError
from .images import decode_base64_image, encode_png, make_grid, read_png_metadata, save_png
from .results import CandidateImage, Result, UpscaledImage
from .retries import RetryPolicy
from .schemas import ModelInfo, StageReport

__all__ = [
    "DEFAULT_BASE_URL",
    "AsyncClient",
    "CandidateImage",
    "Client",
    "DalleflowError",
    "ImageInput",
    "ModelInfo",
    "RequestError",
    "Result",
    "RetryPolicy",
    "StageReport",
    "TransportError",
    "UpscaledImage",
    "decode_base64_image",
    "encode_png",
    "make_grid",
    "read_png_metadata",
    "save_png",
]
