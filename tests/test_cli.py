"""`dalleflow serve`, the README's first command, as a user runs it: it serves the
embedded default, says where, and a SIGTERM (a service manager, `kill`) stops it
and everything it started, even when it was started in the background with
SIGINT ignored. It runs its own Ray, as it would on a user's machine."""

import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from dalleflow.service.limits import MAX_BODY_BYTES
from dalleflow.service.proxy_limits import CALLBACK_VARIABLE
from tests.conftest import REPO, _free_port
from tests.deployments.test_limits import chunked_upload

BIN = Path(sys.executable).parent
DEFAULT_URL = "http://127.0.0.1:8000"


def readme_block(start: str) -> str:
    """The README's bash block that starts with `start`."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    return next(block for block in blocks if block.startswith(start))


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_dalleflow_serve_serves_the_embedded_default_and_a_signal_stops_all_it_started(tmp_path, stop):
    port = _free_port()
    (tmp_path / "tmp").mkdir()
    environment = {**os.environ, "DALLEFLOW_STORE": str(tmp_path / "store"), "TMPDIR": str(tmp_path / "tmp"),
                   # Its own Ray, apart from the test session's (a short path: Ray's socket names).
                   "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray-", dir=os.environ.get("DALLEFLOW_TEST_TMP", "/tmp"))}
    # As on a user's machine: the test session's own Ray turns token auth off and sets the proxy's limits.
    for variable in ("RAY_AUTH_MODE", CALLBACK_VARIABLE):
        environment.pop(variable, None)
    keyed = stop == signal.SIGKILL  # served as the README's keys section serves it
    if keyed:
        environment |= dict([readme_block("DALLEFLOW_API_KEYS=").split(" ", 1)[0].split("=", 1)])
    # Started as `nohup dalleflow serve &` starts it: with SIGINT ignored, which children inherit.
    command = f"trap '' INT; exec {BIN / 'dalleflow'} serve --port {port}"
    server = subprocess.Popen(["bash", "-c", command], env=environment, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    output: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(server.stdout, output), daemon=True).start()
    started: list[psutil.Process] = []
    try:
        url = f"http://127.0.0.1:{port}"
        deadline, said = time.monotonic() + 300, []
        while not any(f"dalleflow is serving: open {url}" in line for line in said):
            assert server.poll() is None and time.monotonic() < deadline, "".join(said)[-3000:]
            try:
                said.append(output.get(timeout=1))
            except queue.Empty:
                pass
        assert httpx.get(url, timeout=30).status_code == 200  # the web page
        headers = {"authorization": f"Bearer {environment['DALLEFLOW_API_KEYS'].split(',')[1]}"} if keyed else {}
        answer = httpx.post(f"{url}/v1/generate", json={"prompt": "a red circle on the left on a white background",
                                                        "num_images": 1, "seed": 1}, headers=headers, timeout=120)  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert {c["generator"] for c in answer.json()["candidates"]} == {"diffusion", "dalle"}
        # Serve's proxy applies the body limits itself (service/proxy_limits.py): 50 MB sent at full speed is not read.
        sent, status = chunked_upload(url, 50 << 20, "".join(f"{k}: {v}\r\n" for k, v in headers.items()))
        assert status == 413 and sent < MAX_BODY_BYTES + (16 << 20), (status, sent >> 20)

        if keyed:
            assert httpx.post(f"{url}/v1/generate", json={"prompt": "a red circle"}, timeout=30).status_code == 401
            client_block = readme_block("export DALLEFLOW_API_KEY=").replace(".venv/bin/", f"{BIN}/").replace(DEFAULT_URL, url)
            done = subprocess.run(["bash", "-c", client_block], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                                  env={**os.environ, "DALLEFLOW_URL": url})  # fmt: skip
            assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "2", done.stdout + done.stderr
            assert len(list((tmp_path / "keyed").glob("*.png"))) >= 3  # the grid and each image

        started = psutil.Process(server.pid).children(recursive=True)
        assert started, "serve run and Ray's processes"
        # Ray's own ports listen on every interface (its gRPC servers bind 0.0.0.0): its token guards them.
        gcs = next(process for process in started if process.name() == "gcs_server")
        assert gcs.environ().get("RAY_AUTH_MODE") == "token"
        server.send_signal(stop)
        assert server.wait(timeout=120) == (0 if stop == signal.SIGTERM else -signal.SIGKILL)
        _, alive = psutil.wait_procs(started, timeout=90)
        assert not alive, [process.cmdline()[:3] for process in alive]
        try:
            httpx.get(url, timeout=5)
            raise AssertionError(f"{url} still answers")
        except httpx.ConnectError:
            pass
        assert list((tmp_path / "tmp").glob("*/*.yaml")) == []  # the config copy made for --port
    finally:
        for process in [psutil.Process(server.pid), *started] if server.poll() is None else started:
            if process.is_running():
                process.kill()
