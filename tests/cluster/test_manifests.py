"""cluster/ checked offline: every manifest against the KubeRay CRD schemas in
kuberay_schemas.json (beside this file: their structural part, extracted from KubeRay's
CRD YAMLs by scripts/extract_crd_schemas.py), every Serve config against Ray's schema
with unknown keys rejected, and the two copies of the GPU Serve config equal."""

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from dalleflow.deployments.config_check import main, serve_configs_in, validate_serve_config

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
KUBERAY_SCHEMAS = Path(__file__).with_name("kuberay_schemas.json")
GPU_SERVE_CONFIG = CLUSTER / "serve_config.gpu.yaml"
# What a manifest's top-level metadata may hold (ObjectMeta fields a user sets);
# the CRD leaves metadata to the API server, so it is checked here.
OBJECT_META_FIELDS = {"name", "namespace", "generateName", "labels", "annotations"}


def strict(schema: dict) -> dict:
    """The schema with undeclared properties as errors, as `kubectl apply
    --validate=strict` treats them (the API server would prune them silently),
    except where the schema says x-kubernetes-preserve-unknown-fields."""
    schema = copy.deepcopy(schema)

    def close(node: dict) -> None:
        if "properties" in node and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        for child in node.get("properties", {}).values():
            close(child)
        for key in ("items", "additionalProperties", "not"):
            if isinstance(node.get(key), dict):
                close(node[key])
        for key in ("anyOf", "allOf", "oneOf"):
            for child in node.get(key, []):
                close(child)

    close(schema)
    return schema


def load_crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> the strict openAPIV3Schema of that CRD version, its
    subtrees stored once under "definitions" put back in place."""
    document = json.loads(KUBERAY_SCHEMAS.read_text())

    def expand(node):
        if isinstance(node, dict):
            if set(node) == {"$ref"}:
                return expand(document["definitions"][node["$ref"].removeprefix("#/definitions/")])
            return {key: expand(value) for key, value in node.items()}
        if isinstance(node, list):
            return [expand(value) for value in node]
        return node

    return {(api_version, kind): strict(expand(schema))
            for api_version, kinds in document["schemas"].items() for kind, schema in kinds.items()}


CRD_SCHEMAS = load_crd_schemas()


def manifests() -> list[tuple[str, dict]]:
    """(where, document) for every Kubernetes object in cluster/*.yaml."""
    found = []
    for path in sorted(CLUSTER.glob("*.y*ml")):
        for index, document in enumerate(yaml.safe_load_all(path.read_text())):
            if isinstance(document, dict) and "kind" in document:
                found.append((f"{path.name}#{index}", document))
    return found


def manifest_problems(document: dict) -> list[str]:
    key = (document.get("apiVersion"), document.get("kind"))
    if key not in CRD_SCHEMAS:
        return [f"no CRD schema for {key} in {KUBERAY_SCHEMAS} (scripts/extract_crd_schemas.py writes it)"]
    validator = jsonschema.Draft4Validator(CRD_SCHEMAS[key])
    problems = [f"{'.'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}" for error in validator.iter_errors(document)]
    problems += [f"metadata.{field}: unknown field" for field in document.get("metadata", {}) if field not in OBJECT_META_FIELDS]
    return problems


def rayservice() -> dict:
    (document,) = [d for _, d in manifests() if d["kind"] == "RayService"]
    return document


def test_the_crd_schemas_are_there():
    assert {("ray.io/v1", "RayService"), ("ray.io/v1", "RayCluster")} <= set(CRD_SCHEMAS)


def test_the_schema_file_has_every_kind_the_manifests_use():
    used = {(document.get("apiVersion"), document["kind"]) for _, document in manifests()}
    assert used and used <= set(CRD_SCHEMAS), f"missing from {KUBERAY_SCHEMAS.name}: {sorted(used - set(CRD_SCHEMAS), key=str)}"
    assert all("$ref" not in json.dumps(CRD_SCHEMAS[key]) for key in used)  # every shared subtree put back
    assert json.loads(KUBERAY_SCHEMAS.read_text())["source"]["kuberay"]  # where the schemas came from


@pytest.mark.parametrize(("where", "document"), manifests(), ids=[where for where, _ in manifests()])
def test_every_manifest_matches_its_crd_schema(where, document):
    assert manifest_problems(document) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["spec", "rayClusterConfig", "workerGroupSpecs", 0, "maxReplica"], 4),  # a typo: maxReplicas
        (["spec", "rayClusterConfig", "gcsFaultToleranceOptions", "redisAdress"], "redis:6379"),
        (["spec", "rayClusterConfig", "headGroupSpec", "rayStartParams", "num-cpus"], 0),  # not a string
        (["spec", "rayClusterConfig", "headGroupSpec", "template", "spec", "containers", 0, "resource"], {}),
        (["metadata", "nmae"], "dalleflow"),
    ],
)
def test_a_seeded_mistake_in_the_manifest_fails_the_validation(path, value):
    document = copy.deepcopy(rayservice())
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert manifest_problems(document) != []


def test_the_rayservice_has_a_gpu_worker_group_an_idle_head_autoscaling_and_gcs_fault_tolerance():
    cluster = rayservice()["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["gcsFaultToleranceOptions"]["redisAddress"]
    (group,) = cluster["workerGroupSpecs"]
    (container,) = group["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert 1 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_serve_config_v2_is_the_gpu_serve_config():
    embedded = yaml.safe_load(rayservice()["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load(GPU_SERVE_CONFIG.read_text())


def test_the_gpu_config_reads_weights_and_stores_images_on_the_workers_volumes():
    spec = rayservice()["spec"]
    (container,) = spec["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"]
    mounts = [mount["mountPath"] for mount in container["volumeMounts"]]
    args = yaml.safe_load(spec["serveConfigV2"])["applications"][0]["args"]
    # Stable Diffusion generates and refines: the refiner names it, so its weights are placed once.
    assert args["refiner"] == "stable-diffusion" and "stable-diffusion" in args["generators"]
    specs = [*args["generators"].values(), args["ranker"], args["upscaler"]]
    sources = [s["weights"] for s in specs] + [s["options"]["vqgan"] for s in specs if s["family"] == "dalle"]
    folders = [source.removeprefix("local-dir:") for source in sources]
    assert all(source.startswith("local-dir:") for source in sources)  # no download at start
    assert all(any(folder.startswith(mount + "/") for mount in mounts) for folder in folders)
    assert args["store_path"] in mounts
    gpu_stages = [d for d in yaml.safe_load(spec["serveConfigV2"])["applications"][0]["deployments"] if d["name"] != "ingress"]
    assert all(0 < d["ray_actor_options"]["num_gpus"] <= 1 for d in gpu_stages)


MODERN_SERVE_CONFIG = CLUSTER / "serve_config.modern.yaml"
SERVE_CONFIGS = [(where, config) for path in (REPO / "dalleflow" / "serve_config.yaml", GPU_SERVE_CONFIG, MODERN_SERVE_CONFIG,
                                                             CLUSTER / "serve_config.dalle-flow.yaml", CLUSTER / "rayservice.yaml")
                 for where, config in serve_configs_in(path)]


@pytest.mark.parametrize(("where", "config"), SERVE_CONFIGS, ids=[where for where, _ in SERVE_CONFIGS])
def test_every_serve_config_validates_strictly(where, config):
    assert validate_serve_config(config) == []


@pytest.mark.parametrize(
    ("deployment_key", "value", "reported"),
    [
        ("max_ongoing_requets", 4, "max_ongoing_requets"),  # Ray's DeploymentSchema alone ignores it
        ("autoscaling_config", {"min_replica": 1, "max_replicas": 2}, "min_replica"),  # Ray keeps it a plain dict
        ("ray_actor_options", {"num_cpus": 1, "num_gpu": 0.4}, "num_gpu"),
    ],
)
def test_a_seeded_typo_in_a_deployment_fails_the_serve_config_validation(deployment_key, value, reported):
    config = yaml.safe_load(GPU_SERVE_CONFIG.read_text())
    config["applications"][0]["deployments"][1][deployment_key] = value
    problems = validate_serve_config(config)
    assert len(problems) == 1 and reported in problems[0]


@pytest.mark.parametrize(
    ("right", "typo"),
    [
        ("max_ongoing_requests: 4", "max_ongoing_requets: 4"),
        ("target_ongoing_requests: 2}", "target_ongoing_request: 2}"),
        ("num_gpus: 0.3}", "num_gpu: 0.3}"),
    ],
)
def test_a_seeded_typo_inside_the_rayservice_serve_config_v2_fails_the_validation(tmp_path, right, typo):
    text = (CLUSTER / "rayservice.yaml").read_text()
    seeded = tmp_path / "rayservice.yaml"
    seeded.write_text(text.replace(right, typo, 1))
    manifest = yaml.safe_load(seeded.read_text())
    assert typo in manifest["spec"]["serveConfigV2"]
    # To the CRD, serveConfigV2 is a string: only the Serve config check can see into it.
    assert manifest_problems(manifest) == []
    ((_, config),) = serve_configs_in(seeded)
    problems = validate_serve_config(config)
    assert len(problems) == 1 and typo.split(":")[0] in problems[0]
    assert main([str(seeded)]) == 1


def test_the_cluster_requires_api_keys_from_a_secret_in_the_ingress_environment():
    spec = rayservice()["spec"]
    args = yaml.safe_load(spec["serveConfigV2"])["applications"][0]["args"]
    assert args["api_key_required"] is True and "api_keys" not in args  # the keys never sit in the config
    (container,) = spec["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"]
    env = {variable["name"]: variable for variable in container["env"]}
    assert env[args.get("api_keys_env", "DALLEFLOW_API_KEYS")]["valueFrom"]["secretKeyRef"]["key"]


def test_a_jax_generator_shares_the_gpu_without_preallocating_it():
    """DALL·E Mega (JAX) beside the torch stages on one card: XLA would take 75% of it
    at its first call unless XLA_PYTHON_CLIENT_PREALLOCATE=false is in the worker's env."""
    spec = rayservice()["spec"]
    config = yaml.safe_load(spec["serveConfigV2"])["applications"][0]
    dalle = config["args"]["generators"]["dalle"]
    assert dalle["family"] == "dalle" and dalle["options"]["dtype"] == "bfloat16"
    (deployment,) = [d for d in config["deployments"] if d["name"] == "generator-dalle"]
    assert 0 < deployment["ray_actor_options"]["num_gpus"] < 1
    (container,) = spec["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"]
    env = {variable["name"]: variable.get("value") for variable in container["env"]}
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"


def test_the_modern_config_fits_its_gpu_stages_on_one_gpu_at_their_most_replicas():
    deployments = yaml.safe_load(MODERN_SERVE_CONFIG.read_text())["applications"][0]["deployments"]
    shares = {d["name"]: d["ray_actor_options"].get("num_gpus", 0) * d["autoscaling_config"]["max_replicas"]
              for d in deployments}
    assert set(shares) == {"ingress", "generator-flux-schnell", "generator-sdxl", "ranker", "upscaler"}
    assert shares["ingress"] == 0 and 0 < sum(shares.values()) <= 1.0


def test_the_guide_creates_the_api_key_secret_the_pods_read():
    import re

    created = re.findall(r"kubectl create secret generic (\S+) --from-literal=(\w+)=", (CLUSTER / "README.md").read_text())
    cluster = rayservice()["spec"]["rayClusterConfig"]
    workers = cluster["workerGroupSpecs"] + [cluster["headGroupSpec"]]
    read = {(env["valueFrom"]["secretKeyRef"]["name"], env["valueFrom"]["secretKeyRef"]["key"])
            for group in workers for container in group["template"]["spec"]["containers"]
            for env in container.get("env", []) if env["name"] == "DALLEFLOW_API_KEYS"}  # fmt: skip
    assert read and read <= set(created), (read, created)
