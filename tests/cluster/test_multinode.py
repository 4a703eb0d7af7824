"""cluster/serve_config.gpu.yaml on a Ray cluster of two nodes started with
`ray start`, as KubeRay starts its Pods: a head without a GPU and a worker that
declares one (a logical GPU: this machine has none, so torch stays on the CPU).

    nice -n 15 .venv/bin/python -m pytest -q tests/cluster/test_multinode.py

The GPU config runs as it is (its models, num_gpus fractions, num_cpus and
autoscaling), except for what a laptop cannot give it: the /models volume is a
folder of tiny random checkpoints in the same formats and folder names, the image
store a temporary folder, and Serve has one proxy on the head (both nodes share
one IP here; on Kubernetes each Pod has its own and runs one).

This pytest process already drives the session's own Ray (tests/conftest.py) and
one process can drive only one cluster, so this cluster is driven from outside,
as KubeRay drives it: `serve deploy` and the dashboard's REST API. It is torn down
by killing exactly the processes it started (`ray stop` would stop every Ray on
the machine, the test session's included).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

from dalleflow.deployments.config_check import validate_serve_config
from tests.tiny_checkpoints import DALLE_FIXTURES, save_tiny_stable_diffusion, save_tiny_swin2sr

REPO = Path(__file__).resolve().parents[2]
GPU_SERVE_CONFIG = REPO / "cluster" / "serve_config.gpu.yaml"
BIN = Path(sys.executable).parent
PROMPT = "a red circle on the left on a white background"
# Bounds on every wait, so a broken cluster fails the test instead of hanging it.
NODE_START_S = 120
NODE_START_ATTEMPTS = 3
DEPLOY_S = 300
NODE_LOSS_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout_s: float, what: str):
    """condition()'s first truthy answer, polled until timeout_s; then a failure
    that says what was awaited and what was seen last."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            answer = condition()
        except (httpx.HTTPError, KeyError, ValueError) as error:  # not up yet
            answer, last = None, repr(error)
        else:
            last = answer
        if answer:
            return answer
        time.sleep(0.5)
    pytest.fail(f"no {what} within {timeout_s} s; last seen: {last}")


def process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state) of every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            table[int(entry)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


class RayNode:
    """One `ray start --block` in its own process group. Its raylet starts the
    worker processes (replicas) in process groups of their own, so the node's
    processes are its group plus everything descended from it."""

    def __init__(self, args: list[str], temp_dir: Path, log: Path, env: dict[str, str]):
        ports = {
            "--node-manager-port": free_port(), "--object-manager-port": free_port(),
            "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(), "--metrics-export-port": free_port(),
        }
        command = [str(BIN / "ray"), "start", "--block", "--node-ip-address", "127.0.0.1", "--temp-dir", str(temp_dir),
                   "--object-store-memory", str(100 * 2**20), "--disable-usage-stats",
                   # Workers bind ports the OS picks: two raylets on one machine share no pool.
                   "--min-worker-port", "0", "--max-worker-port", "0", *map(str, args)]
        command += [str(item) for pair in ports.items() for item in pair]
        self.log = log
        with log.open("a") as out:
            self.process = subprocess.Popen(command, env=env, cwd=temp_dir.parent, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def has_exited(self) -> bool:
        return self.process.poll() is not None

    def processes(self) -> set[int]:
        table = process_table()
        members = {pid for pid, (_, group, state) in table.items() if group == self.process.pid and state != "Z"}
        while True:
            children = {pid for pid, (parent, _, state) in table.items() if parent in members and state != "Z"}
            if children <= members:
                return members
            members |= children

    def kill(self) -> None:
        """The node dies at once, as a machine that loses power: SIGKILL to every process of it."""
        for _ in range(10):  # a process forked meanwhile is caught on the next pass
            victims = self.processes()
            if not victims:
                break
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        self.process.wait(timeout=10)
        assert not self.processes(), f"processes of the node still alive: {self.processes()}"


class LocalCluster:
    def __init__(self, base: Path):
        self.base = base
        self.gcs_port, self.dashboard_port, self.http_port = free_port(), free_port(), free_port()
        self.env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
        self.env |= {"OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        # The ingress's API keys, which the RayService's Pods take from a Secret.
        self.api_key = secrets.token_hex(16)
        self.env["DALLEFLOW_API_KEYS"] = self.api_key
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.head = self.worker = None
        self.start_count = 0

    def start_head(self) -> None:
        # A head that takes no model replica: it has no GPU and one CPU (the RayService's
        # has none; one here leaves the ingress free to land on either node).
        self.head, _ = self._start_node("head", lambda: [
            "--head", "--port", self.gcs_port, "--num-cpus", 1, "--num-gpus", 0,
            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", self.dashboard_port,
            "--ray-client-server-port", free_port(),
        ], is_head=True)

    def start_worker(self) -> str:
        """Starts the GPU worker, as the RayService's worker Pod (8 CPUs, 1 GPU); its node id."""
        self.worker, node_id = self._start_node("worker", lambda: [
            "--address", f"127.0.0.1:{self.gcs_port}", "--num-cpus", 8, "--num-gpus", 1,
        ], is_head=False)
        return node_id

    def _start_node(self, name: str, args, is_head: bool) -> tuple[RayNode, str]:
        """A node started and registered; its node id. Each start has a fresh --temp-dir,
        as a replacement Pod starts with an empty disk. Ray itself aborts a start whose
        helper processes take more than its fixed 15-30 s to come up (seen when the
        machine is busy with other work), or hangs without a word (seen in CI under
        load: an empty log for 120 s); such a start is killed and tried again."""
        known = set() if is_head else {node["node_id"] for node in self.nodes()}
        for _ in range(NODE_START_ATTEMPTS):
            self.start_count += 1
            if is_head:
                self.gcs_port, self.dashboard_port = free_port(), free_port()
                self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
            folder = self.base / f"{name}-{self.start_count}"
            node = RayNode(args(), folder, folder.with_suffix(".log"), self.env)
            try:
                registered = wait_for(
                    lambda: node.has_exited() or [n for n in self.nodes() if n["node_id"] not in known
                                                  and n["state"] == "ALIVE" and n["is_head_node"] == is_head],
                    NODE_START_S, f"{name} node registered",
                )
            except pytest.fail.Exception as stuck:
                print(f"{name} start {self.start_count}: {stuck}")
                registered = True
            if registered is not True:
                return node, registered[0]["node_id"]
            node.kill()
        pytest.fail(f"`ray start` of the {name} failed {NODE_START_ATTEMPTS} times; see the logs below")

    def nodes(self) -> list[dict]:
        answer = httpx.get(f"{self.dashboard}/api/v0/nodes", params={"limit": 100}, timeout=10)
        answer.raise_for_status()
        return answer.json()["data"]["result"]["result"]

    def serve_details(self) -> dict:
        answer = httpx.get(f"{self.dashboard}/api/serve/applications/", timeout=10)
        answer.raise_for_status()
        return answer.json()

    def deploy(self, config_path: Path) -> None:
        done = subprocess.run([str(BIN / "serve"), "deploy", str(config_path), "--address", self.dashboard],
                              env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    def placement(self) -> tuple[str | None, dict[str, set[str]]]:
        """(the app's status, deployment -> node ids of its RUNNING replicas)."""
        application = self.serve_details()["applications"].get("dalleflow") or {}
        if application.get("status") == "DEPLOY_FAILED":
            pytest.fail(f"the app failed to deploy: {application.get('message')}")
        return application.get("status"), {
            name: {r["node_id"] for r in d["replicas"] if r["state"] == "RUNNING"}
            for name, d in application.get("deployments", {}).items()
        }

    def running_replicas(self) -> dict[str, set[str]] | None:
        """deployment -> node ids of its replicas, once the app is RUNNING."""
        status, placement = self.placement()
        return placement if status == "RUNNING" else None

    def tear_down(self) -> None:
        for node in (self.worker, self.head):
            if node is not None:
                node.kill()

    def print_logs(self, line_count: int = 40) -> None:
        """The ends of the nodes' logs: pytest shows them when a test failed."""
        head_folders = sorted(self.base.glob("head-*/session_latest/logs"))
        head_logs = head_folders[-1] if head_folders else self.base
        logs = [*sorted(self.base.glob("*.log")), head_logs / "dashboard.log",
                *sorted((head_logs / "serve").glob("controller_*.log")), *sorted(self.base.glob("*/session_*/logs/raylet.out"))]
        for log in logs:
            if log.is_file():
                lines = [line for line in log.read_text(errors="replace").splitlines()
                         if "[state-dump]" not in line and "web_log.py" not in line][-line_count:]
                print(f"==> {log.relative_to(self.base)} <==", *lines, sep="\n")


def gpu_config_on(models_root: Path, store: Path, http_port: int) -> dict:
    config = yaml.safe_load(GPU_SERVE_CONFIG.read_text())
    config["proxy_location"] = "HeadOnly"
    config["http_options"] = {"host": "127.0.0.1", "port": http_port}
    args = config["applications"][0]["args"]
    args["store_path"] = str(store)
    # The refiner is a generator's model there (Stable Diffusion, placed once): a name, not a model.
    assert args["refiner"] in args["generators"]
    for spec in [*args["generators"].values(), args["ranker"], args["upscaler"]]:
        assert spec["weights"].startswith("local-dir:/models/")
        spec["weights"] = spec["weights"].replace("local-dir:/models", f"local-dir:{models_root}", 1)
        if "vqgan" in spec.get("options", {}):
            spec["options"]["vqgan"] = spec["options"]["vqgan"].replace("local-dir:/models", f"local-dir:{models_root}", 1)
    return config


@pytest.fixture(scope="module")
def models_root(tmp_path_factory, tiny_clip_folder) -> Path:
    """The /models volume of cluster/README.md, with tiny checkpoints in the same formats."""
    root = tmp_path_factory.mktemp("models")
    _, sd_folder = save_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd"), variant="fp16")
    shutil.copytree(sd_folder, root / "stable-diffusion-v1-5")
    shutil.copytree(tiny_clip_folder[1], root / "clip-vit-l-14")
    save_tiny_swin2sr(root / "swin2sr-realworld-x4")
    shutil.copytree(DALLE_FIXTURES / "dalle-tiny", root / "dalle-mega")
    shutil.copytree(DALLE_FIXTURES / "vqgan-tiny", root / "vqgan_imagenet_f16_16384")
    return root


@pytest.fixture(scope="module")
def cluster(models_root, tmp_path_factory):
    # A short path: Ray's Unix sockets must fit in 107 characters.
    base = Path(tempfile.mkdtemp(prefix="ray-mn-", dir=os.environ.get("DALLEFLOW_TEST_TMP", "/tmp")))
    cluster = LocalCluster(base)
    try:
        cluster.start_head()
        cluster.worker_node_id = cluster.start_worker()
        config = gpu_config_on(models_root, tmp_path_factory.mktemp("store"), cluster.http_port)
        assert validate_serve_config(config) == []
        config_path = base / "serve_config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        cluster.deploy(config_path)
        cluster.gpu_stages = {d["name"] for d in config["applications"][0]["deployments"]
                              if d.get("ray_actor_options", {}).get("num_gpus")}
        yield cluster
    finally:
        cluster.tear_down()
        cluster.print_logs()
        shutil.rmtree(base, ignore_errors=True)


def serves_every_stage(cluster: LocalCluster) -> None:
    """generate (generator + ranker), refine (refiner + ranker) and upscale
    (upscaler) over HTTP through the head's proxy."""
    sampling = {"seed": 1, "num_inference_steps": 2}
    headers = {"authorization": f"Bearer {cluster.api_key}"}
    with httpx.Client(base_url=cluster.url, headers=headers, timeout=120) as client:
        answer = client.post("/v1/generate", json={"prompt": PROMPT, "num_images": 2, **sampling})
        assert answer.status_code == 200, answer.text
        generated = answer.json()
        assert {name: report["status"] for name, report in generated["generators"].items()} == {
            "stable-diffusion": "ok", "dalle": "ok"}
        best = generated["candidates"][0]
        assert sorted(c["generator"] for c in generated["candidates"]) == ["dalle", "dalle", "stable-diffusion", "stable-diffusion"]
        assert {(c["width"], c["height"]) for c in generated["candidates"]} == {(32, 32)}
        answer = client.post("/v1/refine", json={"prompt": PROMPT, "image_id": best["id"], "num_images": 2, **sampling})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["candidates"]) == 2
        answer = client.post("/v1/upscale", json={"image_id": best["id"]})
        assert answer.status_code == 200, answer.text
        assert (answer.json()["width"], answer.json()["height"]) == (128, 128)


def test_the_gpu_stages_run_on_the_gpu_worker_and_the_app_serves_across_nodes(cluster):
    placement = wait_for(cluster.running_replicas, DEPLOY_S, "RUNNING app")
    nodes = {node["node_id"]: node for node in cluster.nodes()}
    (head_id,) = [node_id for node_id, node in nodes.items() if node["is_head_node"]]
    assert cluster.gpu_stages == {"generator-stable-diffusion", "generator-dalle", "ranker", "upscaler"}
    for stage in cluster.gpu_stages:
        assert placement[stage] == {cluster.worker_node_id}, stage
    assert nodes[cluster.worker_node_id]["resources_total"]["GPU"] == 1
    details = cluster.serve_details()
    assert set(details["proxies"]) == {head_id}  # so every request crosses to the worker
    serves_every_stage(cluster)


def test_the_app_serves_again_after_losing_the_worker_and_getting_it_back(cluster):
    wait_for(cluster.running_replicas, DEPLOY_S, "RUNNING app")
    lost = cluster.worker_node_id
    cluster.worker.kill()
    wait_for(lambda: [n for n in cluster.nodes() if n["node_id"] == lost and n["state"] == "DEAD"],
             NODE_LOSS_S, "worker node marked dead")
    # The head and its control plane live on; the controller sees the replicas gone
    # and waits for a GPU to start them again.
    wait_for(lambda: not any(lost in nodes for nodes in cluster.placement()[1].values()),
             NODE_LOSS_S, "replicas of the lost node dropped")
    assert cluster.running_replicas() is None
    back = cluster.worker_node_id = cluster.start_worker()
    placement = wait_for(
        lambda: (p := cluster.running_replicas()) and all(p[s] == {back} for s in cluster.gpu_stages) and p,
        DEPLOY_S, "RUNNING app with its GPU stages on the new worker",
    )
    assert all(lost not in nodes for nodes in placement.values())
    serves_every_stage(cluster)
