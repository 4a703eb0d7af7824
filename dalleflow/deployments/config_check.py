"""Checks a Serve config strictly before a cluster sees it.

    python -m dalleflow.deployments.config_check dalleflow/serve_config.yaml cluster/rayservice.yaml

A file is a Serve config (`applications: ...`) or a KubeRay RayService
manifest, whose `spec.serveConfigV2` is checked. The exit status is 1 when any
problem is found.

Ray's own schema (ServeDeploySchema) is the first check, but it ignores keys it
does not know and takes `autoscaling_config` as a plain dict, so a typo such as
`max_ongoing_requets` or `autoscaling_config: {min_replica: 1}` deploys
silently with the default. So every key is also compared with the fields of
Ray's own models (DeploymentSchema, RayActorOptionsSchema, AutoscalingConfig,
...), and a dalleflow application's `args` are checked by AppConfig (which
forbids unknown keys): each model family must be one the factory knows, and
each deployment name one the app builds. A model stage's `user_config` is its
batching (deployments/stages.py Batching, unknown keys refused), and its
`max_ongoing_requests` must hold a full batch, or no batch could ever fill.
"""

from __future__ import annotations

import difflib
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import ServeDeploySchema

from dalleflow.deployments.app import AppConfig, build_app, no_refiner_deployment
from dalleflow.deployments.stages import Batching, ImageModel, Ranker, Upscaler
from dalleflow.models.factory import FAMILIES

APP_IMPORT_PATH = f"{build_app.__module__}:{build_app.__name__}"
STAGE_DEPLOYMENTS = ("ingress", "jobs", "ranker", "upscaler")  # plus generator-<name> per generator, and "refiner" for its own model
MODEL_STAGES = {"ranker": Ranker, "refiner": ImageModel, "upscaler": Upscaler, "generator": ImageModel}


def validate_serve_config(config: Any) -> list[str]:
    """Every problem found in a Serve config (a parsed YAML mapping); [] when none."""
    if not isinstance(config, dict):
        return [f"a Serve config is a mapping, got {type(config).__name__}"]
    problems = _validation_errors(ServeDeploySchema, config, "")
    problems += _unknown_keys(ServeDeploySchema, config, "")
    applications = config.get("applications")
    for index, application in enumerate(applications if isinstance(applications, list) else []):
        if isinstance(application, dict):
            problems += _check_application(application, f"applications[{index}]")
    return problems


def serve_configs_in(path: str | Path) -> list[tuple[str, Any]]:
    """(where, config) for each Serve config in a YAML file: the file itself, or
    each RayService document's serveConfigV2."""
    found = []
    for index, document in enumerate(yaml.safe_load_all(Path(path).read_text())):
        if isinstance(document, dict) and document.get("kind") == "RayService":
            where = f"{path} (document {index}, spec.serveConfigV2)"
            found.append((where, yaml.safe_load((document.get("spec") or {}).get("serveConfigV2") or "")))
        elif isinstance(document, dict) and "kind" in document:
            continue  # another Kubernetes object: no Serve config in it
        else:
            found.append((str(path), document))
    return found


def _check_application(application: dict, path: str) -> list[str]:
    problems = []
    deployments = application.get("deployments") or []
    for index, deployment in enumerate(deployments if isinstance(deployments, list) else []):
        autoscaling = deployment.get("autoscaling_config") if isinstance(deployment, dict) else None
        if isinstance(autoscaling, dict):
            # Ray keeps it as a dict until deploy time: check the values now too.
            problems += _validation_errors(AutoscalingConfig, autoscaling, f"{path}.deployments[{index}].autoscaling_config")
    if application.get("import_path") != APP_IMPORT_PATH:
        return problems  # someone else's application: Ray's schema is all we know of it
    try:
        args = AppConfig.model_validate(application.get("args") or {})
    except ValidationError as error:
        return problems + _format_errors(error, f"{path}.args")
    for stage, spec in [(f"generators.{n}", s) for n, s in args.generators.items()] + [
        ("ranker", args.ranker), ("refiner", args.refiner_spec()), ("upscaler", args.upscaler)
    ]:
        if spec.family not in FAMILIES:
            problems.append(f"{path}.args.{stage}.family: unknown model family {spec.family!r}; one of {sorted(FAMILIES)}")
    shared = args.refining_generator()
    built = set(STAGE_DEPLOYMENTS) | {f"generator-{name}" for name in args.generators} | ({"refiner"} if not shared else set())
    names = [d.get("name") for d in deployments if isinstance(d, dict)] if isinstance(deployments, list) else []
    if shared and "refiner" in names:
        problems.append(f"{path}.deployments: {no_refiner_deployment(shared)}")
        names = [name if name != "refiner" else None for name in names]
    for index, name in enumerate(names):
        if name is None:
            continue
        if name not in built:
            problems.append(f"{path}.deployments[{index}].name: the app builds no deployment {name!r}; one of {sorted(built)}")
        elif names.count(name) > 1 and names.index(name) == index:
            problems.append(f"{path}.deployments: {name!r} is configured more than once")
        elif name not in ("ingress", "jobs"):
            problems += _check_batching(deployments[index], MODEL_STAGES[name.split("-")[0]], f"{path}.deployments[{index}]")
    return problems


def _check_batching(deployment: dict, stage, path: str) -> list[str]:
    if "user_config" not in deployment:
        return []
    try:
        batching = Batching.model_validate(deployment["user_config"] or {})
    except ValidationError as error:
        return _format_errors(error, f"{path}.user_config")
    max_ongoing = deployment.get("max_ongoing_requests", stage.max_ongoing_requests)
    if isinstance(max_ongoing, int) and max_ongoing < batching.max_batch_size:
        return [f"{path}.max_ongoing_requests: {max_ongoing} is less than user_config.max_batch_size "
                f"{batching.max_batch_size}: no batch could fill"]
    return []


def _validation_errors(model: type[BaseModel], data: Any, path: str) -> list[str]:
    try:
        model.model_validate(data)
    except ValidationError as error:
        return _format_errors(error, path)
    return []


def _format_errors(error: ValidationError, path: str) -> list[str]:
    problems = []
    for item in error.errors():
        where = path + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in item["loc"])
        problems.append(f"{where.lstrip('.') or '(top)'}: {item['msg']}")
    return problems


def _unknown_keys(model: type[BaseModel], data: dict, path: str) -> list[str]:
    fields = model.model_fields
    problems = []
    if model.model_config.get("extra") != "allow":
        known = set(fields) | {field.alias for field in fields.values() if field.alias}
        problems += [_unknown_key(model, key, known, path) for key in data if key not in known]
    for name, field in fields.items():
        key = name if name in data else field.alias
        if key in data:
            problems += _unknown_keys_in(field.annotation, data[key], f"{path}.{key}")
    return problems


def _unknown_key(model: type[BaseModel], key: str, known: set[str], path: str) -> str:
    guess = difflib.get_close_matches(str(key), known, n=1)
    hint = f"did you mean {guess[0]!r}?" if guess else f"known: {', '.join(sorted(known))}"
    return f"{path}.{key}".lstrip(".") + f": unknown key for {model.__name__} ({hint})"


def _unknown_keys_in(annotation: Any, value: Any, path: str) -> list[str]:
    """Follows a field's type down to the pydantic models inside it (Optional,
    Union, list[...], dict[str, ...], Annotated), wherever the value has their shape."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _unknown_keys(annotation, value, path) if isinstance(value, dict) else []
    if origin is typing.Annotated:
        return _unknown_keys_in(args[0], value, path)
    if origin in (typing.Union, types.UnionType):
        # A Union such as Dict | AutoscalingConfig: the model arm is the one that says what the keys mean.
        arms = [arm for arm in args if _holds_model(arm) and _has_shape(arm, value)]
        return _unknown_keys_in(arms[0], value, path) if arms else []
    if origin in (list, tuple, set) and args and isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _unknown_keys_in(args[0], item, f"{path}[{i}]")]
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return [p for key, item in value.items() for p in _unknown_keys_in(args[1], item, f"{path}.{key}")]
    return []


def _holds_model(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_model(arg) for arg in typing.get_args(annotation))


def _has_shape(annotation: Any, value: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _has_shape(typing.get_args(annotation)[0], value)
    if origin in (list, tuple, set):
        return isinstance(value, list)
    return isinstance(value, dict)


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    problem_count = 0
    for path in paths:
        for where, config in serve_configs_in(path):
            problems = validate_serve_config(config)
            problem_count += len(problems)
            print(f"{where}: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
            for problem in problems:
                print(f"  {problem}")
    return 1 if problem_count else 0


if __name__ == "__main__":
    sys.exit(main())
