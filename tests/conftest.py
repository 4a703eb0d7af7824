"""One Ray cluster and one running dalleflow app for the whole test session.

Starting Ray takes seconds and a Serve app with its models longer, so every
test that needs the service shares this one (real Ray Serve, real HTTP on a
free local port, the embedded models). The image store lives in a temporary
folder of the session.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dalleflow.service.proxy_limits import with_proxy_limits

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The Ray the tests start applies the body limits in Serve's proxy, as `dalleflow serve`'s does.
os.environ.update(with_proxy_limits(dict(os.environ)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keyed_tiny_app(keys: list[str], tiny_diffusion, clip_folder: Path, store: Path):
    """The real app with API keys on, over a flow of tiny models (the diffusion one in every image role)."""
    from dalleflow.models.ranker import ClipRanker
    from dalleflow.service.auth import ApiKeys
    from dalleflow.service.flow import Flow
    from dalleflow.service.http import create_app
    from dalleflow.service.stages import LocalStage
    from dalleflow.service.store import ImageStore

    stage = LocalStage(tiny_diffusion)
    app = create_app(api_keys=ApiKeys(keys))
    app.state.flow = Flow(
        generators={"diffusion": stage}, ranker=LocalStage(ClipRanker.from_pretrained(f"local-dir:{clip_folder}")),
        refiner=stage, upscaler=stage, store=ImageStore(store),
    )  # fmt: skip
    return app


@contextmanager
def serve_in_thread(app) -> Iterator[str]:
    """An ASGI app on a real HTTP server in this process (uvicorn, in a thread); yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def embedded_upscaler():
    """The embedded default upscaler, as the app loads it."""
    from dalleflow.deployments.app import EMBEDDED_UPSCALER
    from dalleflow.models.factory import create_model

    return create_model(EMBEDDED_UPSCALER)


@pytest.fixture(scope="session")
def ray_session():
    import ray

    # A short temp path: Ray's Unix sockets must fit in 107 characters.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir=os.environ.get("DALLEFLOW_TEST_TMP", "/tmp"))
    # Logical CPUs above the 2 real cores: the stages are light while idle,
    # and autoscaling tests need room to add replicas.
    ray.init(num_cpus=4, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False)
    yield ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def store_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="session")
def serve_app(ray_session, store_path):
    """The embedded default app, deployed once; yields its HTTP base URL."""
    from ray import serve

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    deploy_session_app(store_path)
    return f"http://127.0.0.1:{port}"


def deploy_session_app(store_path: Path) -> None:
    """The embedded default at the root: at the start, and again after a test that needed the root."""
    from ray import serve

    from dalleflow.deployments.app import build_app

    serve.run(build_app({"store_path": str(store_path)}), name="dalleflow", route_prefix="/")


@pytest.fixture(scope="session")
def server_url(serve_app) -> str:
    return serve_app


# Tiny, seeded, randomly initialised models built by the same code as the real ones.

TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


def build_tiny_diffusion(text_width: int = 16):
    import torch
    from diffusers import DPMSolverMultistepScheduler

    from dalleflow.models.diffusion import PixelDiffusionConfig, ShapesDiffusion, TextEncoder, TextEncoderConfig, shapes_vocab
    from dalleflow.models.diffusion.pixel_space import build_unet, noise_schedule

    torch.manual_seed(0)
    text = TextEncoder(TextEncoderConfig(vocab=shapes_vocab(), width=text_width, layers=1, heads=2))
    unet = build_unet(width=16, block_out_channels=(8, 16, 16))
    scheduler = DPMSolverMultistepScheduler.from_config(noise_schedule().config)
    return ShapesDiffusion(unet, text, scheduler, PixelDiffusionConfig())


@pytest.fixture(scope="session")
def tiny_diffusion():
    return build_tiny_diffusion()


@pytest.fixture(scope="session")
def tiny_clip_folder(tmp_path_factory):
    """(model in memory, its saved local-dir folder)."""
    import open_clip
    import torch

    from dalleflow.models.ranker.clip import save_local_dir

    configs = tmp_path_factory.mktemp("configs")
    (configs / "tiny-test-clip.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(configs)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-test-clip", pretrained=None)
    folder = tmp_path_factory.mktemp("tiny-clip")
    save_local_dir(model, TINY_CLIP_CONFIG, folder)
    return model, folder
