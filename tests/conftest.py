"""One Ray cluster and one running dalleflow app for the whole test session.

Starting Ray takes seconds and a Serve app with its models longer, so every
test that needs the service shares this one (real Ray Serve, real HTTP on a
free local port, the embedded models). The image store lives in a temporary
folder of the session.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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

    from dalleflow.deployments.app import build_app

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"store_path": str(store_path)}), name="dalleflow", route_prefix="/")
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def server_url(serve_app) -> str:
    return serve_app
