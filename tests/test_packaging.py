"""dalleflow as a user gets it from a wheel (not an editable checkout): it serves the embedded
default from any folder, its config, weights and web page read from the installed package.

The wheels are built from a copy of the source, installed with --no-deps into a scratch venv that
sees this environment's packages (its dependencies) behind its own, and `dalleflow serve` runs
there, from another folder, with its own Ray.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import _free_port

REPO = Path(__file__).resolve().parent.parent
# What is never part of a build: venvs, git, caches, earlier builds.
NOT_SOURCE = shutil.ignore_patterns(".venv*", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "runs")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    source = tmp_path_factory.mktemp("source") / "dalleflow"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("wheels")
    for project in (source / "client", source):
        # No build isolation: the build backend is this environment's, so no index is needed.
        built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                                str(project), "-w", str(out)], capture_output=True, text=True, timeout=300)  # fmt: skip
        assert built.returncode == 0, built.stderr[-3000:]
    return {wheel.name.split("-")[0]: wheel for wheel in out.glob("*.whl")}


def test_the_wheel_holds_every_file_the_package_reads(wheels):
    names = set(zipfile.ZipFile(wheels["dalleflow"]).namelist())
    package = REPO / "dalleflow"
    data = [path.relative_to(REPO).as_posix() for path in package.rglob("*")
            if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts]  # fmt: skip
    assert "dalleflow/serve_config.yaml" in data and any(name.startswith("dalleflow/weights/") for name in data)
    assert any(name.startswith("dalleflow/web/") for name in data)
    assert sorted(set(data) - names) == []


@pytest.fixture(scope="module")
def installed(wheels, tmp_path_factory) -> Path:
    """A venv holding only the two wheels; the rest of this environment is on its path behind them."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # Without PYTHONPATH: a checkout on it could pass for installed distributions to pip.
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                           "--no-index", *map(str, wheels.values())], capture_output=True, text=True, timeout=300,
                          env=clean_environment())  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    site = Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())  # fmt: skip
    # Plain paths, not a site dir: this environment's own .pth files (an editable dalleflow) stay unread.
    underneath = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz-dependencies.pth").write_text("\n".join(underneath) + "\n")
    # `dalleflow serve` runs Ray's `serve` beside itself, a script pip writes when it installs ray;
    # ray is underneath here, so its script is written as pip would have.
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name="serve")
    script = venv / "bin" / "serve"
    script.write_text(f"#!{python}\nimport sys\nfrom {entry.module} import {entry.attr}\nsys.exit({entry.attr}())\n")
    script.chmod(0o755)
    return venv


def clean_environment(**extra: str) -> dict[str, str]:
    """This environment without what points at the checkout (the tests run with PYTHONPATH set)."""
    return {**{key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}, **extra}


def test_the_installed_package_is_the_wheels_not_the_checkout(installed, tmp_path):
    done = subprocess.run([installed / "bin" / "python", "-c", "import dalleflow, dalleflow_client, dalleflow.cli as cli; "
                           "print(dalleflow.__file__, dalleflow_client.__file__, cli.DEFAULT_CONFIG, cli.DEFAULT_CONFIG.is_file())"],
                          capture_output=True, text=True, env=clean_environment(), cwd=tmp_path, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    package, client, config, is_file = done.stdout.split()
    site = str(installed / "lib")
    assert package.startswith(site) and client.startswith(site) and config.startswith(site) and is_file == "True"


def test_dalleflow_serve_from_a_wheel_serves_from_another_folder(installed, tmp_path):
    port = _free_port()
    environment = clean_environment(DALLEFLOW_STORE=str(tmp_path / "store"), RAY_USAGE_STATS_ENABLED="0",
                                    # Its own Ray (a short path: Ray's socket names must fit).
                                    RAY_TMPDIR=tempfile.mkdtemp(prefix="ray-", dir=os.environ.get("DALLEFLOW_TEST_TMP", "/tmp")))  # fmt: skip
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([installed / "bin" / "dalleflow", "serve", "--port", str(port)], cwd=tmp_path, env=environment,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    started: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower()
        answer = httpx.post(f"{url}/v1/generate", json={"prompt": "a red circle on the left on a white background",
                                                        "num_images": 1, "seed": 1}, timeout=120)  # fmt: skip
        assert answer.status_code == 200, answer.text
        candidates = answer.json()["candidates"]
        assert {c["generator"] for c in candidates} == {"diffusion", "dalle"} and all(c["image"] for c in candidates)
        started = psutil.Process(server.pid).children(recursive=True)

        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=120) == 0
    finally:
        for process in [psutil.Process(server.pid), *started] if server.poll() is None else started:
            if process.is_running():
                process.kill()
        log.close()
