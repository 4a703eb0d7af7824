"""cluster/serve_config.modern.yaml deployed on tiny checkpoints of every model in it
(FLUX and SDXL pipelines in diffusers' folder format, an open_clip folder, a Swin2SR
folder) in this session's Ray: the two diffusers families fan out, their joint pool is
ranked, SDXL refines a pick and Swin2SR upscales it, over HTTP with an API key.

Changed from the file for a 2-core CPU only: no GPUs (num_gpus dropped, small
num_cpus), the store in a temporary folder, and FLUX at 32 px instead of its 1024."""

import shutil
from pathlib import Path

import httpx
import pytest
import yaml
from ray import serve

from dalleflow.deployments.app import compose_app
from dalleflow.deployments.config_check import validate_serve_config
from tests.tiny_checkpoints import save_tiny_pipeline, save_tiny_swin2sr

MODERN_SERVE_CONFIG = Path(__file__).resolve().parents[2] / "cluster" / "serve_config.modern.yaml"
PROMPT = "a red circle on the left on a white background"
API_KEY = "modern-config-test-key"


@pytest.fixture(scope="module")
def models_root(tmp_path_factory, tiny_clip_folder) -> Path:
    """The /models volume of cluster/README.md, with tiny checkpoints in the same formats."""
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(save_tiny_pipeline("flux", tmp_path_factory.mktemp("tiny-flux")), root / "FLUX.1-schnell")
    sdxl = save_tiny_pipeline("sdxl", tmp_path_factory.mktemp("tiny-sdxl"), variant="fp16")
    shutil.copytree(sdxl, root / "stable-diffusion-xl-base-1.0")
    shutil.copytree(tiny_clip_folder[1], root / "clip-vit-l-14")
    save_tiny_swin2sr(root / "swin2sr-realworld-x4")
    return root


def on_this_machine(models_root: Path, store: Path) -> dict:
    config = yaml.safe_load(MODERN_SERVE_CONFIG.read_text())
    assert validate_serve_config(config) == []
    (application,) = config["applications"]
    args = application["args"]
    args["store_path"] = str(store)
    for spec in [*args["generators"].values(), args["ranker"], args["upscaler"]]:
        assert spec["weights"].startswith("local-dir:/models/")
        spec["weights"] = spec["weights"].replace("local-dir:/models", f"local-dir:{models_root}", 1)
    args["generators"]["flux-schnell"]["options"]["image_size"] = 32
    for deployment in application["deployments"]:
        deployment["ray_actor_options"] = {"num_cpus": 0.1}
        if deployment["name"] == "ingress":
            # Its keys from the environment, as the cluster's Secret sets it (rayservice.yaml).
            deployment["ray_actor_options"]["runtime_env"] = {"env_vars": {"DALLEFLOW_API_KEYS": API_KEY}}
    return application


@pytest.fixture(scope="module")
def modern_app(serve_app, models_root, tmp_path_factory):
    application = on_this_machine(models_root, tmp_path_factory.mktemp("store"))
    serve.run(compose_app(application["args"], deployments=application["deployments"]),
              name="modern", route_prefix="/modern")  # fmt: skip
    yield f"{serve_app}/modern"
    serve.delete("modern")


def test_two_diffusers_families_fan_out_rank_refine_and_upscale(modern_app):
    sampling = {"seed": 1, "num_inference_steps": 2}
    with httpx.Client(base_url=modern_app, headers={"authorization": f"Bearer {API_KEY}"}, timeout=300) as client:
        answer = client.post("/v1/generate", json={"prompt": PROMPT, "num_images": 2, **sampling})
        assert answer.status_code == 200, answer.text
        generated = answer.json()
        assert {name: report["status"] for name, report in generated["generators"].items()} == {
            "flux-schnell": "ok", "sdxl": "ok"}
        candidates = generated["candidates"]
        assert sorted(c["generator"] for c in candidates) == ["flux-schnell", "flux-schnell", "sdxl", "sdxl"]
        assert [c["rank"] for c in candidates] == [0, 1, 2, 3]
        scores = [c["clip_score"] for c in candidates]
        assert scores == sorted(scores, reverse=True)
        assert {(c["width"], c["height"]) for c in candidates} == {(32, 32)}
        best = candidates[0]

        answer = client.post("/v1/refine", json={"prompt": PROMPT, "image_id": best["id"], "num_images": 2,
                                                  "skip_rate": 0.5, **sampling})  # fmt: skip
        assert answer.status_code == 200, answer.text
        variations = answer.json()["candidates"]
        assert len(variations) == 2 and {v["generator"] for v in variations} == {"refiner"}

        answer = client.post("/v1/upscale", json={"image_id": variations[0]["id"]})
        assert answer.status_code == 200, answer.text
        assert (answer.json()["width"], answer.json()["height"]) == (128, 128)


def test_a_negative_prompt_flux_cannot_honour_is_refused_by_name_before_anything_runs(modern_app):
    body = {"prompt": PROMPT, "negative_prompt": "blurry", "seed": 2, "num_inference_steps": 2, "num_images": 1}
    with httpx.Client(base_url=modern_app, headers={"authorization": f"Bearer {API_KEY}"}, timeout=300) as client:
        refused = client.post("/v1/generate", json=body)
        assert refused.status_code == 422, refused.text
        assert "negative_prompt: the generator 'flux-schnell' cannot honour it: it takes none as configured" in refused.text
        answer = client.post("/v1/generate", json={**body, "generators": ["sdxl"]})
        assert answer.status_code == 200, answer.text
        assert [c["generator"] for c in answer.json()["candidates"]] == ["sdxl"]
        # Without the API key the cluster config answers nothing.
        assert httpx.post(f"{modern_app}/v1/generate", json=body, timeout=60).status_code == 401


def test_a_size_within_both_families_limits_is_made_and_one_outside_is_refused_by_name(modern_app):
    body = {"prompt": PROMPT, "seed": 3, "num_inference_steps": 2, "num_images": 1}
    with httpx.Client(base_url=modern_app, headers={"authorization": f"Bearer {API_KEY}"}, timeout=300) as client:
        answer = client.post("/v1/generate", json={**body, "height": 48, "width": 40})
        assert answer.status_code == 200, answer.text
        assert {(c["width"], c["height"]) for c in answer.json()["candidates"]} == {(40, 48)}
        # The tiny SDXL's sides are multiples of 8 (diffusers' check for SD and SDXL), the tiny FLUX's of 4.
        refused = client.post("/v1/generate", json={**body, "width": 44})
        assert refused.status_code == 422, refused.text
        assert "width: the generator 'sdxl' cannot honour it: 44 px is outside its limits: a multiple of 8" in refused.text
        assert client.post("/v1/generate", json={**body, "width": 44, "generators": ["flux-schnell"]}).status_code == 200
