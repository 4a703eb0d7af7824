"""Builds the application from its arguments (serve_config.yaml's `args`).

    serve run serve_config.yaml                       # the embedded default
    serve run dalleflow.deployments.app:build_app     # the same, with default args

Arguments are checked strictly: an unknown key is an error, not a silent default.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from dalleflow.deployments.ingress import Ingress
from dalleflow.deployments.stages import Generator, Ranker, Refiner, Upscaler
from dalleflow.models.factory import ModelSpec

EMBEDDED_DIFFUSION = ModelSpec(family="shapes-diffusion", weights="embedded:shapes-diffusion")


class AppConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    generators: dict[str, ModelSpec] = Field(
        default_factory=lambda: {"diffusion": EMBEDDED_DIFFUSION}, description="Enabled generators by name."
    )
    ranker: ModelSpec = ModelSpec(family="open-clip", weights="embedded:shapes-clip")
    refiner: ModelSpec = EMBEDDED_DIFFUSION
    upscaler: ModelSpec = ModelSpec(family="realesrgan", options={"model": "realesr-animevideov3-x4"})
    store_path: str | None = Field(None, description="Image store folder; default $DALLEFLOW_STORE or ~/.local/share/dalleflow/images.")
    generator_timeout_s: float = Field(120.0, gt=0, description="Deadline of each generator per request.")


def _models(config: AppConfig) -> list[dict]:
    stages = [(f"generator:{name}", spec) for name, spec in config.generators.items()]
    stages += [("ranker", config.ranker), ("refiner", config.refiner), ("upscaler", config.upscaler)]
    return [
        {"stage": stage, "name": stage.split(":")[-1], "model": spec.family,
         "weights": spec.weights or str(spec.options.get("model", ""))}
        for stage, spec in stages
    ]


def build_app(args: dict | None = None) -> Application:
    config = AppConfig.model_validate(args or {})
    generators = {
        name: Generator.options(name=f"generator-{name}").bind(spec.model_dump())
        for name, spec in config.generators.items()
    }
    return Ingress.options(name="ingress").bind(
        generators=generators,
        ranker=Ranker.options(name="ranker").bind(config.ranker.model_dump()),
        refiner=Refiner.options(name="refiner").bind(config.refiner.model_dump()),
        upscaler=Upscaler.options(name="upscaler").bind(config.upscaler.model_dump()),
        models=_models(config),
        store_path=config.store_path,
        generator_timeout_s=config.generator_timeout_s,
    )
