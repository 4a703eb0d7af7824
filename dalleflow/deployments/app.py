"""Builds the application from its arguments (serve_config.yaml's `args`).

    serve run dalleflow/serve_config.yaml             # the embedded default
    serve run dalleflow.deployments.app:build_app     # the same, with default args

Arguments are checked strictly: an unknown key is an error, not a silent default.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray.serve import Application

from dalleflow.deployments.ingress import Ingress
from dalleflow.deployments.jobs import JobQueue
from dalleflow.deployments.stages import ImageModel, Ranker, Upscaler
from dalleflow.models.factory import ModelSpec
from dalleflow.service.limits import HttpLimits
from dalleflow.service.retention import Retention

EMBEDDED_DIFFUSION = ModelSpec(family="shapes-diffusion", weights="embedded:shapes-diffusion")
EMBEDDED_UPSCALER = ModelSpec(family="spandrel", weights="embedded:shapes-upscaler")
EMBEDDED_DALLE = ModelSpec(family="dalle", weights="embedded:shapes-dalle", options={"vqgan": "embedded:shapes-vqgan"})


class AppConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    generators: dict[str, ModelSpec] = Field(
        default_factory=lambda: {"diffusion": EMBEDDED_DIFFUSION, "dalle": EMBEDDED_DALLE},
        description="Enabled generators by name.",
    )
    ranker: ModelSpec = ModelSpec(family="open-clip", weights="embedded:shapes-clip")
    refiner: ModelSpec | str = Field(
        "diffusion",
        description="The name of a generator whose model also refines (one model, loaded once), "
        "or a model of its own. A model equal to a generator's is that generator's.",
    )
    upscaler: ModelSpec = EMBEDDED_UPSCALER
    store_path: str | None = Field(None, description="Image store folder; default $DALLEFLOW_STORE or ~/.local/share/dalleflow/images.")
    generator_timeout_s: float = Field(120.0, gt=0, description="Deadline of each generator per request.")
    jina_compat: bool = Field(True, description="Also answer dalle-flow's Jina HTTP client at POST /post.")
    jina_grpc: str | None = Field(
        None, pattern=r"^[^\s:]+:\d{1,5}$",
        description="Also answer dalle-flow's Jina gRPC client (grpc://) on host:port, e.g. 127.0.0.1:51005 (dalle-flow's port).",
    )
    retention: Retention = Field(default_factory=Retention, description="How long the image store keeps images and job records.")
    http_limits: HttpLimits = Field(default_factory=HttpLimits, description="Bounds on every HTTP request: body deadline, "
                                    "requests running models at once and waiting, the names a keyless server answers to.")
    jobs_at_once: int = Field(1, ge=1, description="Jobs (POST /v1/jobs) the job queue runs at once; the others wait in order.")
    max_queued_jobs: int = Field(100, ge=0, description="Jobs waiting in the queue before POST /v1/jobs answers 429.")
    api_keys_env: str = Field(
        "DALLEFLOW_API_KEYS", description="Environment variable of the ingress holding the API keys (comma-separated); "
        "keys there turn bearer authentication on. Never the keys themselves: Ray shows a config's args.")
    api_key_required: bool = Field(False, description="Refuse to start without a key in api_keys_env (the cluster config).")

    @model_validator(mode="after")
    def _refiner_is_known(self) -> AppConfig:
        if isinstance(self.refiner, str) and self.refiner not in self.generators:
            raise ValueError(
                f"refiner: {self.refiner!r} names no generator; name one of {sorted(self.generators)} "
                "or give the refiner a model of its own ({family: ..., weights: ...})"
            )
        return self

    def refining_generator(self) -> str | None:
        """The generator whose model refines too, if any: named, or the same model given twice."""
        if isinstance(self.refiner, str):
            return self.refiner
        return next((name for name, spec in self.generators.items() if spec == self.refiner), None)

    def refiner_spec(self) -> ModelSpec:
        shared = self.refining_generator()
        return self.generators[shared] if shared else self.refiner


def no_refiner_deployment(shared: str) -> str:
    """Why options for a `refiner` deployment are refused when a generator's model refines."""
    return (f"there is no 'refiner' deployment: the refiner is the model of generator {shared!r}, "
            f"loaded once in 'generator-{shared}'; move the refiner's options there")


def _models(config: AppConfig) -> list[dict]:
    stages = [(f"generator:{name}", spec) for name, spec in config.generators.items()]
    stages += [("ranker", config.ranker), ("refiner", config.refiner_spec()), ("upscaler", config.upscaler)]
    return [
        {"stage": stage, "name": stage.split(":")[-1], "model": spec.family,
         "weights": spec.weights or str(spec.options.get("model", ""))}
        for stage, spec in stages
    ]


def build_app(args: dict | None = None) -> Application:
    """The import_path of every Serve config. Ray calls it with `args` alone and
    refuses a builder that takes any other parameter."""
    return compose_app(args)


def compose_app(args: dict | None = None, deployments: list[dict] | None = None) -> Application:
    """deployments: per-deployment options by name, the same list as a Serve
    config's `deployments:` (for `serve.run` from Python: tests, benchmarks)."""
    config = AppConfig.model_validate(args or {})
    overrides = {entry["name"]: {k: v for k, v in entry.items() if k != "name"} for entry in deployments or []}

    def named(deployment, name: str):
        return deployment.options(name=name, **overrides.pop(name, {}))

    shared = config.refining_generator()
    if shared and "refiner" in overrides:
        raise ValueError(f"deployments: {no_refiner_deployment(shared)}, or give the refiner a model of its own in args.refiner")
    generators = {
        name: named(ImageModel, f"generator-{name}").bind(
            spec.model_dump(), ["generator", "refiner"] if name == shared else ["generator"]
        )
        for name, spec in config.generators.items()
    }
    if shared:
        refiner = generators[shared]
    else:
        refiner = named(ImageModel, "refiner").bind(config.refiner.model_dump(), ["refiner"])
    ranker = named(Ranker, "ranker").bind(config.ranker.model_dump())
    upscaler = named(Upscaler, "upscaler").bind(config.upscaler.model_dump())
    jobs = named(JobQueue, "jobs").bind(
        generators=generators, ranker=ranker, refiner=refiner, upscaler=upscaler, store_path=config.store_path,
        generator_timeout_s=config.generator_timeout_s, jobs_at_once=config.jobs_at_once,
        max_queued_jobs=config.max_queued_jobs, retention=config.retention.model_dump(),
    )  # fmt: skip
    app = named(Ingress, "ingress").bind(
        generators=generators,
        ranker=ranker,
        refiner=refiner,
        upscaler=upscaler,
        jobs=jobs,
        models=_models(config),
        store_path=config.store_path,
        generator_timeout_s=config.generator_timeout_s,
        jina_compat=config.jina_compat,
        jina_grpc=config.jina_grpc,
        jobs_at_once=config.jobs_at_once,
        max_queued_jobs=config.max_queued_jobs,
        api_keys_env=config.api_keys_env,
        api_key_required=config.api_key_required,
        http_limits=config.http_limits.model_dump(),
    )
    if overrides:
        raise ValueError(f"deployments: the app builds no deployment {sorted(overrides)}")
    return app
