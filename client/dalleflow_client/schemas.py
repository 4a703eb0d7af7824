"""The HTTP contract of dalleflow, shared by the server and the client.

These pydantic models are the single definition of every request and answer:
the server validates against them (a 422 names the field and its limit) and
publishes them in its OpenAPI schema; the client builds and parses them.
Field names follow diffusers (prompt, negative_prompt, num_inference_steps,
guidance_scale) and dalle-flow (skip_rate, num_images).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_PROMPT_CHARS = 300
MAX_GENERATE_IMAGES = 16
MAX_DIFFUSE_IMAGES = 36
MAX_SEED = 2**32 - 1
MAX_INFERENCE_STEPS = 100
MAX_GUIDANCE_SCALE = 30.0
# A base64 PNG up to this many characters (about 6 MB of PNG) is accepted.
MAX_IMAGE_BASE64_CHARS = 8_000_000
# Decoded images up to this many pixels (a 2048 x 2048 picture); larger ones are
# refused before they are decompressed.
MAX_IMAGE_PIXELS = 2048 * 2048
IMAGE_ID_PATTERN = r"^[0-9a-f]{32}$"

Prompt = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="What the image should show.")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Sampling(_Request):
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="None draws one; the answer echoes it.")
    num_inference_steps: int = Field(20, ge=1, le=MAX_INFERENCE_STEPS)
    guidance_scale: float = Field(3.0, ge=0.0, le=MAX_GUIDANCE_SCALE)
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)


class GenerateRequest(_Sampling):
    prompt: str = Prompt
    num_images: int = Field(4, ge=1, le=MAX_GENERATE_IMAGES, description="Images per generator.")
    generators: list[str] | None = Field(None, description="Generator names; None means every enabled one.")


class _ImageInput(_Request):
    image: str | None = Field(None, max_length=MAX_IMAGE_BASE64_CHARS, description="A base64 PNG or JPEG.")
    image_id: str | None = Field(None, pattern=IMAGE_ID_PATTERN, description="An id from an earlier answer.")

    @model_validator(mode="after")
    def _one_image(self):
        if (self.image is None) == (self.image_id is None):
            raise ValueError("give exactly one of image and image_id")
        return self


class DiffuseRequest(_Sampling, _ImageInput):
    prompt: str = Prompt
    skip_rate: float = Field(0.5, ge=0.0, le=1.0, description="Share of the schedule skipped: near 1 stays close.")
    num_images: int = Field(4, ge=1, le=MAX_DIFFUSE_IMAGES)


class UpscaleRequest(_ImageInput):
    pass


class Candidate(BaseModel):
    id: str
    generator: str
    rank: int = Field(description="0 is the best.")
    clip_score: float
    seed: int
    image: str = Field(description="base64 PNG")
    width: int
    height: int


class StageReport(BaseModel):
    status: Literal["ok", "failed", "timeout"]
    count: int = 0
    seconds: float = 0.0
    error: str | None = None


class GenerateResponse(BaseModel):
    id: str
    prompt: str
    seed: int
    candidates: list[Candidate]
    generators: dict[str, StageReport] = Field(description="What each generator did.")
    timings: dict[str, float] = Field(description="Seconds per stage.")


class UpscaleResponse(BaseModel):
    id: str
    image: str
    width: int
    height: int


class ModelInfo(BaseModel):
    stage: str
    name: str
    model: str
    weights: str


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
