"""The HTTP contract of dalleflow, shared by the server and the client.

These pydantic models are the single definition of every request and answer:
the server validates against them (a 422 names the field and its limit) and
publishes them in its OpenAPI schema; the client builds and parses them.
Field names follow diffusers (prompt, negative_prompt, num_inference_steps,
guidance_scale) and dalle-flow (skip_rate, num_images).

Making ranked variations of a picked image is called *refine* everywhere a user
meets it (POST /v1/refine, RefineRequest, the page's Refine button, the client's
refine, `dalleflow refine`, job kind "refine"), the name the model contract
(ImageToImage.refine), the config (`refiner`) and the events ("refiner") already
used. dalle-flow's "diffuse" stays an alias of each: POST /v1/diffuse,
DiffuseRequest, job kind "diffuse", the client's diffuse methods, `dalleflow diffuse`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

MAX_PROMPT_CHARS = 300
MAX_GENERATE_IMAGES = 16
MAX_REFINE_IMAGES = 36
MAX_DIFFUSE_IMAGES = MAX_REFINE_IMAGES  # the old name
MAX_SEED = 2**32 - 1
MAX_INFERENCE_STEPS = 100
MAX_GUIDANCE_SCALE = 30.0
MAX_IMAGE_SIDE = 2048
# A base64 PNG up to this many characters (about 6 MB of PNG) is accepted.
MAX_IMAGE_BASE64_CHARS = 8_000_000
# Decoded images up to this many pixels (a 2048 x 2048 picture); larger ones are
# refused before they are decompressed.
MAX_IMAGE_PIXELS = 2048 * 2048
IMAGE_ID_PATTERN = r"^[0-9a-f]{32}$"

Prompt = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="What the image should show.")


class _Request(BaseModel):
    # strict: "4", "4.0" and true are not the number 4, and "0.5" is not 0.5.
    model_config = ConfigDict(extra="forbid", strict=True)


class _Sampling(_Request):
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="None draws one; the answer echoes it.")
    num_inference_steps: int | None = Field(
        None, ge=1, le=MAX_INFERENCE_STEPS,
        description="Denoising steps; None: each model's own default (the embedded diffusion model's is 20).",
    )
    guidance_scale: float | None = Field(
        None, ge=0.0, le=MAX_GUIDANCE_SCALE,
        description="Classifier-free guidance; None: each model's own default (its scale means different "
        "things to a diffusion model and to DALL·E's super-conditioning).",
    )
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)


class GenerateRequest(_Sampling):
    prompt: str = Prompt
    num_images: int = Field(
        4, ge=1, le=MAX_GENERATE_IMAGES,
        description="Images per generator: the answer ranks num_images times the number of generators "
        "(dalle-flow's meaning). A refine request's num_images counts the refiner's, its one model.",
    )
    generators: list[str] | None = Field(None, max_length=32, description="Generator names; None means every enabled one.")
    height: int | None = Field(
        None, ge=1, le=MAX_IMAGE_SIDE,
        description="Image height in pixels; None: each generator's own. A chosen generator that cannot make it "
        "(a fixed-size model, or a side outside its family's limits) answers 422 naming them.",
    )
    width: int | None = Field(None, ge=1, le=MAX_IMAGE_SIDE, description="Image width in pixels; as height.")


class _ImageInput(_Request):
    image: str | None = Field(None, max_length=MAX_IMAGE_BASE64_CHARS, description="A base64 PNG or JPEG.")
    image_id: str | None = Field(None, pattern=IMAGE_ID_PATTERN, description="An id from an earlier answer.")

    @model_validator(mode="after")
    def _one_image(self):
        if (self.image is None) == (self.image_id is None):
            raise ValueError("give exactly one of image and image_id")
        return self


class RefineRequest(_Sampling, _ImageInput):
    """Ranked variations of an image (POST /v1/refine; dalle-flow's "diffuse")."""

    prompt: str = Prompt
    skip_rate: float = Field(0.5, ge=0.0, le=1.0, description="Share of the schedule skipped: near 1 stays close.")
    num_images: int = Field(
        4, ge=1, le=MAX_REFINE_IMAGES,
        description="Variations in all: one model, the refiner, makes them (a generate request's num_images is per "
        "generator). Up to 36, dalle-flow's sprite of variations.",
    )


DiffuseRequest = RefineRequest  # the old name


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
    nsfw_content_detected: bool = Field(False, description="The model's safety checker replaced this image (black): it is not what the prompt asked.")


class StageReport(BaseModel):
    status: Literal["ok", "failed", "timeout", "unavailable"]
    count: int = 0
    seconds: float = 0.0
    error: str | None = None


class GenerateResponse(BaseModel):
    """The answer of generate and of refine: candidates ranked best first."""

    id: str
    prompt: str
    seed: int
    candidates: list[Candidate]
    generators: dict[str, StageReport] = Field(description="What each generator did.")
    timings: dict[str, float] = Field(description="Seconds per stage.")
    # A default, so this client still reads a server that sends none.
    warnings: list[str] = Field(
        default_factory=list,
        description="What the answer could not honour, such as words of the prompt its models do not know "
        "(the embedded models know the shapes world's words only: GET /v1/models lists them).",
    )


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
    vocabulary: list[str] | None = Field(
        None, description="The words its text encoder knows, sorted; None: any text (an open vocabulary such as "
        "CLIP's or T5's), or a stage that reads no prompt.",
    )


class PromptWorld(BaseModel):
    """What models trained on a generated world draw, and how to ask them."""

    name: str
    summary: str
    words: dict[str, list[str]] = Field(description="The world's words by kind: colours, shapes, positions, ...")
    caption_forms: list[str] = Field(description="The sentences it was trained on, with the kind of each slot in braces.")
    example_prompts: list[str]
    real_checkpoints: str = Field(description="How to serve models that draw anything instead.")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    world: PromptWorld | None = Field(
        None, description="Present when a serving model draws the embedded shapes world only: what it knows.",
    )


# Streaming: POST /v1/generate or /v1/refine with `Accept: application/x-ndjson`
# answers one JSON event per line instead of one JSON answer: progress while each
# generator runs, each generator's images as it finishes, then the same answer as
# without streaming. The request body is the same either way.
NDJSON = "application/x-ndjson"


class ProgressEvent(BaseModel):
    type: Literal["progress"] = "progress"
    generator: str = Field(description="The generator (or \"refiner\") that made the step.")
    step: int = Field(description="Steps done, 1 to step_count.")
    step_count: int
    preview: str | None = Field(None, description="A small base64 PNG of the images so far, side by side, where the model has one.")


class GeneratedImage(BaseModel):
    seed: int
    image: str = Field(description="base64 PNG")
    width: int
    height: int


class GeneratedEvent(BaseModel):
    """One generator is done: its images, not ranked yet (none when it failed)."""

    type: Literal["generated"] = "generated"
    generator: str
    report: StageReport
    images: list[GeneratedImage] = []


class ResultEvent(BaseModel):
    """The last event: the ranked answer, as the same request without streaming gets it."""

    type: Literal["result"] = "result"
    result: GenerateResponse


class ErrorEvent(BaseModel):
    """The last event when the request failed after the stream began (the HTTP status was already sent)."""

    type: Literal["error"] = "error"
    status_code: int = Field(description="The status the request would have had without streaming.")
    detail: str
    code: str | None = Field(None, description="A stable error code: stage_failed, stage_timeout, stage_unavailable...")
    stage: str | None = Field(None, description="The stage that failed, where one did.")


StreamEvent = Annotated[ProgressEvent | GeneratedEvent | ResultEvent | ErrorEvent, Field(discriminator="type")]
STREAM_EVENT = TypeAdapter(StreamEvent)


# Jobs: POST /v1/jobs queues a generate or refine request and answers at once with
# the job; GET /v1/jobs/{id} follows it; DELETE /v1/jobs/{id} cancels it.
JOB_ID_PATTERN = IMAGE_ID_PATTERN
JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED_JOB_STATUSES = ("done", "failed", "cancelled")


class GenerateJobRequest(_Request):
    kind: Literal["generate"] = "generate"
    request: GenerateRequest


class RefineJobRequest(_Request):
    kind: Literal["refine", "diffuse"] = Field("refine", description='"diffuse": the old name of "refine".')
    request: RefineRequest


DiffuseJobRequest = RefineJobRequest  # the old name

JobRequest = Annotated[GenerateJobRequest | RefineJobRequest, Field(discriminator="kind")]


class StepProgress(BaseModel):
    step: int
    step_count: int


class Job(BaseModel):
    id: str
    # A job keeps the kind it was submitted as: a client that says "diffuse" (the old name)
    # reads its jobs back under that name.
    kind: Literal["generate", "refine", "diffuse"]
    status: JobStatus
    queue_position: int | None = Field(None, description="Jobs to run before this one (0: next); None unless queued on the replica that answers.")
    progress: dict[str, StepProgress] = Field(default_factory=dict, description="Steps done per generator.")
    created_at: float = Field(description="Unix time.")
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = Field(description="When the replica running it last wrote it (at least every few seconds until it ends).")
    result: GenerateResponse | None = Field(None, description="The answer, once done.")
    error: str | None = Field(None, description="Why it failed.")
