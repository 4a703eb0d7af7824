import copy
from pathlib import Path

import pytest
import yaml

from dalleflow.deployments.config_check import main, serve_configs_in, validate_serve_config

REPO = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((REPO / "dalleflow" / "serve_config.yaml").read_text())


def edited(edit) -> dict:
    config = copy.deepcopy(DEFAULT)
    edit(config)
    return config


def app(config: dict) -> dict:
    return config["applications"][0]


def test_the_embedded_default_config_has_no_problem():
    assert validate_serve_config(DEFAULT) == []


@pytest.mark.parametrize(
    ("edit", "reported"),
    [
        (lambda c: c.update(proxy_locaton="EveryNode"), "proxy_locaton: unknown key for ServeDeploySchema (did you mean 'proxy_location'?)"),
        (lambda c: c["http_options"].update(prot=8000), "http_options.prot: unknown key"),
        (lambda c: app(c).update(route_prefx="/"), "applications[0].route_prefx: unknown key"),
        (lambda c: app(c)["deployments"][0].update(max_ongoing_requets=4), "applications[0].deployments[0].max_ongoing_requets: unknown key"),
        (lambda c: app(c)["deployments"][1]["autoscaling_config"].update(target_ongoing_request=2), "autoscaling_config.target_ongoing_request: unknown key"),
        (lambda c: app(c)["deployments"][1]["autoscaling_config"].update(policy={"policy_functon": "x"}), "autoscaling_config.policy.policy_functon: unknown key"),
        (lambda c: app(c)["deployments"][2]["ray_actor_options"].update(num_gpu=1), "ray_actor_options.num_gpu: unknown key"),
    ],
)
def test_an_unknown_key_anywhere_ray_has_a_model_for_is_a_problem(edit, reported):
    problems = validate_serve_config(edited(edit))
    assert len(problems) == 1 and reported in problems[0]


def test_autoscaling_values_are_checked_although_ray_keeps_them_a_dict():
    config = edited(lambda c: app(c)["deployments"][1]["autoscaling_config"].update(min_replicas=3, max_replicas=2))
    assert any("autoscaling_config" in p and "min_replicas" in p for p in validate_serve_config(config))


def test_ray_schema_errors_are_reported_with_where_they_are():
    problems = validate_serve_config(edited(lambda c: app(c)["deployments"][0].update(max_ongoing_requests="many")))
    assert problems and all(p.startswith("applications[0].deployments[0].max_ongoing_requests") for p in problems)


def test_a_stage_user_config_is_its_batching_and_must_fit_max_ongoing_requests():
    typo = edited(lambda c: app(c)["deployments"][1]["user_config"].update(max_batch_sise=4))
    assert validate_serve_config(typo) == ["applications[0].deployments[1].user_config.max_batch_sise: Extra inputs are not permitted"]
    too_few = edited(lambda c: app(c)["deployments"][1].update(max_ongoing_requests=4))
    assert validate_serve_config(too_few) == [
        "applications[0].deployments[1].max_ongoing_requests: 4 is less than user_config.max_batch_size 8: no batch could fill"]


def test_the_app_args_are_checked_by_app_config():
    problems = validate_serve_config(edited(lambda c: app(c)["args"].update(rankr={"family": "open-clip"})))
    assert problems == ["applications[0].args.rankr: Extra inputs are not permitted"]
    problems = validate_serve_config(edited(lambda c: app(c)["args"]["ranker"].update(weigths="x")))
    assert problems == ["applications[0].args.ranker.weigths: Extra inputs are not permitted"]


def test_a_model_family_the_factory_does_not_know_is_a_problem():
    problems = validate_serve_config(edited(lambda c: app(c)["args"]["upscaler"].update(family="esrgan")))
    assert len(problems) == 1 and problems[0].startswith("applications[0].args.upscaler.family: unknown model family 'esrgan'")


def test_deployments_must_be_ones_the_app_builds_and_named_once():
    config = edited(lambda c: app(c)["deployments"].append({"name": "generator-mega"}))
    assert validate_serve_config(config) == [
        "applications[0].deployments[5].name: the app builds no deployment 'generator-mega'; one of "
        "['generator-dalle', 'generator-diffusion', 'ingress', 'jobs', 'ranker', 'upscaler']"
    ]
    config = edited(lambda c: app(c)["args"]["generators"].update(mega={"family": "dalle", "weights": "local-dir:/m"}))
    config["applications"][0]["deployments"].append({"name": "generator-mega"})
    assert validate_serve_config(config) == []
    config = edited(lambda c: app(c)["deployments"].append({"name": "ranker"}))
    assert validate_serve_config(config) == ["applications[0].deployments: 'ranker' is configured more than once"]


def test_a_refiner_deployment_is_a_problem_when_a_generator_refines():
    config = edited(lambda c: app(c)["deployments"].append({"name": "refiner", "ray_actor_options": {"num_cpus": 0.25}}))
    assert validate_serve_config(config) == [
        "applications[0].deployments: there is no 'refiner' deployment: the refiner is the model of generator 'diffusion', "
        "loaded once in 'generator-diffusion'; move the refiner's options there"
    ]
    # A refiner of its own model is a deployment of its own, named "refiner".
    own = {"family": "stable-diffusion", "weights": "local-dir:/models/sd"}
    config = edited(lambda c: app(c)["args"].update(refiner=own))
    config["applications"][0]["deployments"].append({"name": "refiner", "ray_actor_options": {"num_cpus": 0.25}})
    assert validate_serve_config(config) == []
    problems = validate_serve_config(edited(lambda c: app(c)["args"].update(refiner="mega")))
    assert len(problems) == 1 and "refiner" in problems[0] and "'mega' names no generator" in problems[0]


def test_another_apps_args_and_deployments_are_left_to_ray():
    config = edited(lambda c: app(c).update(import_path="other.module:app", args={"anything": 1}))
    config["applications"][0]["deployments"].append({"name": "whatever"})
    assert validate_serve_config(config) == []


def test_what_is_not_a_serve_config_is_a_problem_not_a_crash():
    assert validate_serve_config(["applications"]) == ["a Serve config is a mapping, got list"]
    assert validate_serve_config({"applications": "dalleflow"}) == ["applications: Input should be a valid list"]


def test_a_rayservice_file_yields_its_serve_config_v2(tmp_path):
    manifest = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "x"},
                "spec": {"serveConfigV2": yaml.safe_dump(DEFAULT)}}
    path = tmp_path / "rayservice.yaml"
    path.write_text(yaml.safe_dump_all([{"apiVersion": "v1", "kind": "Secret"}, manifest]))
    assert serve_configs_in(path) == [(f"{path} (document 1, spec.serveConfigV2)", DEFAULT)]


def test_the_command_line_prints_each_problem_and_fails(tmp_path, capsys):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump(DEFAULT))
    bad.write_text(yaml.safe_dump(edited(lambda c: app(c)["deployments"][0].update(max_ongoing_requets=4))))
    assert main([str(good)]) == 0
    assert main([str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{good}: ok" in out and f"{bad}: 1 problem(s)" in out and "max_ongoing_requets" in out
    assert main([]) == 2
