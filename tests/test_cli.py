"""`dalleflow serve`, the README's first command, as a user runs it: it serves the
embedded default, says where, and a SIGTERM (a service manager, `kill`) stops it
and everything it started, even when it was started in the background with
SIGINT ignored. It runs its own Ray, as it would on a user's machine."""

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from tests.conftest import _free_port

BIN = Path(sys.executable).parent


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)


def test_dalleflow_serve_serves_the_embedded_default_and_a_sigterm_stops_all_it_started(tmp_path):
    port = _free_port()
    environment = {**os.environ, "DALLEFLOW_STORE": str(tmp_path / "store"),
                   # Its own Ray, apart from the test session's (a short path: Ray's socket names).
                   "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray-", dir=os.environ.get("DALLEFLOW_TEST_TMP", "/tmp"))}
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
        answer = httpx.post(f"{url}/v1/generate", json={"prompt": "a red circle on the left on a white background",
                                                        "num_images": 1, "seed": 1}, timeout=120)  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert {c["generator"] for c in answer.json()["candidates"]} == {"diffusion", "dalle"}

        started = psutil.Process(server.pid).children(recursive=True)
        assert started, "serve run and Ray's processes"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=120) == 0
        _, alive = psutil.wait_procs(started, timeout=60)
        assert not alive, [process.cmdline()[:3] for process in alive]
        try:
            httpx.get(url, timeout=5)
            raise AssertionError(f"{url} still answers")
        except httpx.ConnectError:
            pass
    finally:
        for process in [psutil.Process(server.pid), *started] if server.poll() is None else started:
            if process.is_running():
                process.kill()
