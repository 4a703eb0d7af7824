"""One thin Ray Serve deployment per stage; each wraps a model made by the factory.

No model math here: each method forwards to the model's own call. Resources
default small enough for a 2-core laptop; serve_config.yaml overrides them
per deployment (num_cpus, num_gpus, autoscaling) without touching code.
"""

from __future__ import annotations

from ray import serve

from dalleflow.models.factory import ModelSpec, create_model


class _ModelStage:
    def __init__(self, spec: dict):
        self.spec = ModelSpec.model_validate(spec)
        self.model = create_model(self.spec)

    def ready(self) -> bool:
        return True

    def check_health(self) -> None:
        if self.model is None:  # pragma: no cover - construction raises first
            raise RuntimeError("model not loaded")


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8)
class Generator(_ModelStage):
    def generate(self, prompts: list[str], **kwargs):
        return self.model.generate(prompts, **kwargs)


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=16)
class Ranker(_ModelStage):
    def score(self, prompt: str, images):
        return self.model.score(prompt, images)


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=8)
class Refiner(_ModelStage):
    def refine(self, image, prompt: str, **kwargs):
        return self.model.refine(image, prompt, **kwargs)


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=8)
class Upscaler(_ModelStage):
    def upscale(self, image):
        return self.model.upscale(image)
