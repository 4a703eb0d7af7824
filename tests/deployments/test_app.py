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
    args = yaml.safe_load((REPO / "serve_config.yaml").read_text())["applications"][0]["args"]
    assert isinstance(call_user_app_builder_with_args_if_necessary(build_app, args), Application)


def test_compose_app_refuses_options_for_a_deployment_it_does_not_build():
    with pytest.raises(ValueError, match="generator-stable-diffusion"):
        compose_app({}, deployments=[{"name": "generator-stable-diffusion", "num_replicas": 2}])
