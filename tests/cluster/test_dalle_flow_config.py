"""cluster/serve_config.dalle-flow.yaml deployed on tiny checkpoints of every model in it, in
the published formats (DALL·E Mega's and its VQGAN's folders, GLID-3 XL's bert.pt /
finetune.pt / kl-f8.pt with a bert-base-uncased tokenizer folder, an open_clip folder,
SwinIR-L's .pth), in this session's Ray; dalle-flow's own README client code (jina 3.34 in
.venv-jina) runs its four steps against it: generate, pick, diffuse, upscale.

Changed from the file for a 2-core CPU only: no GPUs, float32, the store in a temporary
folder, GLID-3 XL at 64 px (its latents 8x8) with 4 steps in its folder's
generation_config.json (dalle-flow ran 100), and no API key: the README's code sends
none (dalle-flow's server had none), so a keyed deployment needs the key in the client's headers."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from ray import serve

from dalleflow.deployments.app import compose_app
from dalleflow.deployments.config_check import validate_serve_config
from tests.conftest import _free_port, deploy_session_app
from tests.tiny_checkpoints import DALLE_FIXTURES, save_tiny_glid3

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "cluster" / "serve_config.dalle-flow.yaml"
SWINIR = REPO / "tests" / "models" / "upscaler_fixtures" / "swinir-l-tiny-x4" / "swinir_l_tiny_x4.pth"
JINA_PYTHON = REPO / ".venv-jina" / "bin" / "python"


@pytest.fixture(scope="module")
def models_root(tmp_path_factory, tiny_clip_folder) -> Path:
    """The /models volume of cluster/README.md, with tiny checkpoints in the same formats."""
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(DALLE_FIXTURES / "dalle-tiny", root / "dalle-mega")
    shutil.copytree(DALLE_FIXTURES / "vqgan-tiny", root / "vqgan_imagenet_f16_16384")
    glid3, tokenizer = save_tiny_glid3(tmp_path_factory.mktemp("glid3"))
    shutil.copytree(glid3, root / "glid-3-xl")
    (root / "glid-3-xl" / "generation_config.json").write_text(json.dumps({"num_inference_steps": 4}))
    shutil.copytree(tokenizer, root / "bert-base-uncased")
    shutil.copytree(tiny_clip_folder[1], root / "clip-vit-l-14-336")
    (root / "swinir").mkdir()
    shutil.copy(SWINIR, root / "swinir" / "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth")
    return root


def on_this_machine(models_root: Path, store: Path, grpc_port: int) -> dict:
    config = yaml.safe_load(CONFIG.read_text())
    assert validate_serve_config(config) == []
    (application,) = config["applications"]
    args = application["args"]
    args["store_path"] = str(store)
    specs = [*args["generators"].values(), args["ranker"], args["upscaler"]]
    for spec in specs:
        for key, value in [("weights", spec["weights"]), *spec.get("options", {}).items()]:
            if isinstance(value, str) and value.startswith("local-dir:/models/"):
                target = spec if key == "weights" else spec["options"]
                target[key] = value.replace("local-dir:/models", f"local-dir:{models_root}", 1)
        spec.get("options", {}).pop("dtype", None)
    args["generators"]["glid3"]["options"]["image_size"] = 64
    args["api_key_required"] = False
    args["jina_grpc"] = f"127.0.0.1:{grpc_port}"
    for deployment in application["deployments"]:
        deployment["ray_actor_options"] = {"num_cpus": 0.1}
    return application


@pytest.fixture(scope="module")
def dalle_flow_app(serve_app, store_path, models_root, tmp_path_factory):
    """At the root, where the Jina client posts whatever path its server URL has: the
    session's own app steps aside for it, and comes back after."""
    grpc_port = _free_port()
    application = on_this_machine(models_root, tmp_path_factory.mktemp("store"), grpc_port)
    serve.delete("dalleflow")
    try:
        serve.run(compose_app(application["args"], deployments=application["deployments"]),
                  name="dalle-flow", route_prefix="/")  # fmt: skip
        yield {"http": serve_app, "grpc": f"grpc://127.0.0.1:{grpc_port}"}
    finally:
        serve.delete("dalle-flow")
        deploy_session_app(store_path)


def run_the_seeds_client_code(server_url: str) -> dict:
    """dalle-flow's README code (README.md's section) in jina's own client; what its variables hold at the end."""
    assert JINA_PYTHON.exists(), "the jina client's venv is missing: run `bash scripts/setup.sh test`"
    env = {**os.environ, "MPLBACKEND": "Agg", "JINA_LOG_LEVEL": "ERROR", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([str(JINA_PYTHON), str(REPO / "tests/service/dalle_flow_readme.py"), server_url],
                         capture_output=True, text=True, timeout=900, env=env, cwd=REPO)  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_dalle_flows_four_steps_on_its_own_models(dalle_flow_app, transport):
    seen = run_the_seeds_client_code(dalle_flow_app[transport])
    candidates, variations = seen["candidates"], seen["variations"]
    # 2 per generator (the README's num_images), DALL·E Mega's and GLID-3 XL's ranked together.
    assert sorted(c["tags"]["generator"] for c in candidates) == ["dalle", "dalle", "glid3", "glid3"]
    scores = [c["clip_score"] for c in candidates]
    assert scores == sorted(scores, reverse=True)
    assert seen["pick"] == {"id": candidates[2]["id"], "uri": candidates[2]["uri"]}
    # GLID-3 XL's 36 variations of the pick, then SwinIR-L x4 of the 35th.
    assert len(variations) == 36 and {v["tags"]["generator"] for v in variations} == {"refiner"}
    upscaled = seen["upscaled"]
    assert upscaled["id"] == seen["variation_pick"]["id"] and upscaled["tags"]["upscaled"] is True


SINGLE_REQUEST_CLIENT = """
import json, sys
from docarray import Document
from jina import Client
client = Client(host=sys.argv[1])
docs = client.post('/', Document(text='a red circle on the left'), parameters={'num_images': 1}, stream=False)
print(json.dumps([[m.tags['generator'] for m in doc.matches] for doc in docs]))
"""


def test_the_single_request_rpc_of_newer_jina_clients_is_answered_too(dalle_flow_app):
    # stream=False: jina.JinaSingleDataRequestRPC/process_single_data instead of the JinaRPC/Call stream.
    run = subprocess.run([str(JINA_PYTHON), "-c", SINGLE_REQUEST_CLIENT, dalle_flow_app["grpc"]], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "JINA_LOG_LEVEL": "ERROR"}, cwd=REPO)  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    assert sorted(json.loads(run.stdout.strip().splitlines()[-1])[0]) == ["dalle", "glid3"]
