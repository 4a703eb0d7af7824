"""build_app as Ray calls it from a Serve config's import_path."""

from pathlib import Path

import pytest
import yaml
from ray.serve import Application

# What `serve run` / `serve deploy` run on an import_path (no public equivalent):
# it refuses a builder that takes anything but the args dict.
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

from dalleflow.deployments.app import build_app, compose_app

REPO = Path(__file__).resolve().parents[2]


def test_ray_accepts_build_app_as_the_builder_of_the_serve_config():
    args = yaml.safe_load((REPO / "dalleflow" / "serve_config.yaml").read_text())["applications"][0]["args"]
    assert isinstance(call_user_app_builder_with_args_if_necessary(build_app, args), Application)


def test_compose_app_refuses_options_for_a_deployment_it_does_not_build():
    with pytest.raises(ValueError, match="generator-stable-diffusion"):
        compose_app({}, deployments=[{"name": "generator-stable-diffusion", "num_replicas": 2}])


def _deployment_names(app: Application) -> set[str]:
    from ray.serve._private.build_app import build_app as flatten

    return {deployment.name for deployment in flatten(app, name="dalleflow").deployments}


def test_a_generator_that_refines_is_one_deployment():
    # The default names its refiner by the generator; the old shape gives the same model again.
    old_shape = {"refiner": {"family": "shapes-diffusion", "weights": "embedded:shapes-diffusion"}}
    for args in ({}, old_shape):
        assert _deployment_names(compose_app(args)) == {"ingress", "jobs", "generator-diffusion", "generator-dalle", "ranker", "upscaler"}
    own = {"refiner": {"family": "shapes-diffusion", "weights": "embedded:shapes-diffusion", "options": {"images_per_call": 4}}}
    assert "refiner" in _deployment_names(compose_app(own))


def test_options_for_the_old_refiner_deployment_say_where_they_go_now():
    with pytest.raises(ValueError, match="move the refiner's options there"):
        compose_app({}, deployments=[{"name": "refiner", "ray_actor_options": {"num_cpus": 0.25}}])
