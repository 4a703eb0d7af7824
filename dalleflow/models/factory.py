"""One factory for every stage's model, open_clip style: a family names the code,
a weight source string names the weights.

Weight sources:
- "embedded:NAME"   the package's own weights in dalleflow/weights/NAME
- "local-dir:PATH"  a folder on this machine (or a mounted volume)
- anything else     passed to the family's own loader (a hub id where the
                    machine has internet, or open_clip's "MODEL@TAG")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

WEIGHTS_FOLDER = Path(__file__).resolve().parent.parent / "weights"


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    family: str = Field(description="Which code loads it: shapes-diffusion, dalle, glid3, diffusers (stable-diffusion: the same), open-clip, realesrgan, swin2sr, spandrel.")
    weights: str = Field("", description="Weight source: embedded:NAME, local-dir:PATH, or a hub id.")
    options: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments for the loader.")


def resolve_weights(source: str) -> str:
    """embedded:NAME and local-dir:PATH -> a folder path that exists; others unchanged."""
    for prefix, base in (("embedded:", WEIGHTS_FOLDER), ("local-dir:", None)):
        if source.startswith(prefix):
            rest = source[len(prefix) :]
            folder = base / rest if base else Path(rest).expanduser()
            if not folder.is_dir():
                raise FileNotFoundError(f"weights {source!r}: no folder at {folder}")
            return str(folder)
    return source


def _shapes_diffusion(spec: ModelSpec):
    from dalleflow.models.diffusion import ShapesDiffusion

    return ShapesDiffusion.from_pretrained(resolve_weights(spec.weights), **spec.options)


def _open_clip(spec: ModelSpec):
    from dalleflow.models.devices import default_device
    from dalleflow.models.ranker import ClipRanker

    source = spec.weights
    if source.startswith(("embedded:", "local-dir:")):
        source = "local-dir:" + resolve_weights(source)
    # The GPU Ray assigned when there is one, as the other families pick it, so
    # one config runs on a GPU worker and on a CPU.
    return ClipRanker.from_pretrained(source, **{"device": default_device(), **spec.options})


def _realesrgan(spec: ModelSpec):
    from dalleflow.models.upscaler import RealEsrganUpscaler

    return RealEsrganUpscaler(**spec.options)


def _diffusers(spec: ModelSpec):
    """Any diffusers text-to-image pipeline folder or hub id; options go to
    DiffusersModel.from_pretrained, each LoRA's weights a weight source string too."""
    from dalleflow.models.diffusers_pipeline import DiffusersModel

    options = dict(spec.options)
    loras = [dict(lora) for lora in options.pop("loras", [])]
    for lora in loras:
        lora["weights"] = resolve_weights(lora.get("weights", ""))
    return DiffusersModel.from_pretrained(resolve_weights(spec.weights), loras=loras, **options)


def _swin2sr(spec: ModelSpec):
    from dalleflow.models.upscaler.swin2sr import Swin2SRUpscaler

    return Swin2SRUpscaler.from_pretrained(resolve_weights(spec.weights), **spec.options)


def _glid3(spec: ModelSpec):
    """GLID-3 XL's published files in `weights`; options.tokenizer (a bert-base-uncased folder)
    and options.clip (an open_clip weight source, for finetune.pt) are weight sources too;
    options.vae a file in the folder (default kl-f8.pt) or a weight source."""
    from dalleflow.models.devices import default_device
    from dalleflow.models.glid3 import Glid3
    from dalleflow.models.ranker import ClipRanker

    options = dict(spec.options)
    if "tokenizer" not in options:
        raise ValueError("glid3: options.tokenizer names a bert-base-uncased tokenizer folder (e.g. local-dir:PATH)")
    options["tokenizer"] = resolve_weights(options["tokenizer"])
    if str(options.get("vae", "")).startswith(("embedded:", "local-dir:")):
        options["vae"] = resolve_weights(options["vae"])
    if "clip" in options:
        source = options["clip"]
        if source.startswith(("embedded:", "local-dir:")):
            source = "local-dir:" + resolve_weights(source)
        options["clip"] = ClipRanker.from_pretrained(source, device=options.get("device") or default_device())
    return Glid3.from_pretrained(resolve_weights(spec.weights), **options)


def _spandrel(spec: ModelSpec):
    from dalleflow.models.upscaler.spandrel_models import SpandrelUpscaler

    return SpandrelUpscaler.from_pretrained(resolve_weights(spec.weights), **spec.options)


def _dalle(spec: ModelSpec):
    """DalleBart weights (dalle-mini's folder layout) in `weights`; the VQGAN's in
    options["vqgan"], a weight source string of its own; other options (dtype,
    temperature, top_k, top_p, batch_rows) go to DalleGenerator."""
    from dalleflow.models.dalle.generator import DalleGenerator

    options = dict(spec.options)
    if "vqgan" not in options:
        raise ValueError("dalle: options.vqgan names the VQGAN weights (e.g. local-dir:PATH)")
    vqgan = resolve_weights(options.pop("vqgan"))
    return DalleGenerator.from_pretrained(resolve_weights(spec.weights), vqgan, **options)


FAMILIES = {
    "shapes-diffusion": _shapes_diffusion,
    "open-clip": _open_clip,
    "realesrgan": _realesrgan,
    "diffusers": _diffusers,
    # The name configs used when only Stable Diffusion 1.x/2.x was served: the same loader.
    "stable-diffusion": _diffusers,
    "swin2sr": _swin2sr,
    "spandrel": _spandrel,
    "glid3": _glid3,
    "dalle": _dalle,
}


def create_model(spec: ModelSpec | dict) -> Any:
    spec = ModelSpec.model_validate(spec)
    if spec.family not in FAMILIES:
        raise ValueError(f"unknown model family {spec.family!r}; one of {sorted(FAMILIES)}")
    return FAMILIES[spec.family](spec)
