"""Extract the structural part of KubeRay's CRD schemas into tests/cluster/kuberay_schemas.json.

tests/cluster/test_manifests.py validates every manifest in cluster/ against these schemas
offline, so the tests need nothing beside the checkout. Regenerate the file from a folder of
KubeRay CRD YAMLs (ray-project/kuberay: ray-operator/config/crd/bases/ray.io_*.yaml) when
moving to another KubeRay release:

    python scripts/extract_crd_schemas.py ../shared/kuberay

and check that the file in the repo matches such a folder (exit status 1 if not):

    python scripts/extract_crd_schemas.py ../shared/kuberay --check

What is kept, per served, non-deprecated CRD version (ray.io/v1 RayService and RayCluster):
its openAPIV3Schema with every validation keyword (type, properties, required, enum, items,
additionalProperties, format, pattern, nullable, default, anyOf..., x-kubernetes-*); prose
(description, title, example, externalDocs) is dropped, and a keyword the script does not know
stops it rather than being lost. Subtrees that occur more than once (the Pod template of every
group, RayService's copy of the RayCluster spec) are stored once under "definitions" and
referenced as {"$ref": "#/definitions/NAME"}; load_schemas() below expands them back. The
file records where it came from: the CRD files' sha256, controller-gen's version from their
annotations, and the KubeRay version or commit where the folder states one.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "cluster" / "kuberay_schemas.json"

# Keywords of a Kubernetes CRD schema (apiextensions.k8s.io/v1 JSONSchemaProps) kept as they are,
# with every x-kubernetes-* one; properties, items, additionalProperties, anyOf... are walked into.
KEPT = {
    "type", "format", "default", "enum", "required", "nullable", "pattern",
    "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "multipleOf",
    "maxLength", "minLength", "maxItems", "minItems", "uniqueItems", "maxProperties", "minProperties",
}
DROPPED = {"description", "title", "example", "externalDocs"}
# Subtrees at least this long (compact JSON) that occur twice or more go to "definitions".
SHARED_MIN_CHARS = 200


def compact(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def structural(node: dict, where: str) -> dict:
    """The schema node without prose; an unknown keyword is an error."""
    out = {}
    for key, value in node.items():
        if key in DROPPED:
            continue
        if key.startswith("x-kubernetes-") or key in KEPT:
            out[key] = copy.deepcopy(value)
        elif key in ("properties", "patternProperties"):
            out[key] = {name: structural(child, f"{where}.{name}") for name, child in value.items()}
        elif key in ("additionalProperties", "items", "not", "dependencies"):
            if isinstance(value, dict) and key == "dependencies":
                out[key] = {name: structural(child, f"{where}.{name}") if isinstance(child, dict) else list(child)
                            for name, child in value.items()}
            elif isinstance(value, dict):
                out[key] = structural(value, f"{where}[{key}]")
            elif isinstance(value, list):  # items as a list of schemas
                out[key] = [structural(child, f"{where}[{key}][{i}]") for i, child in enumerate(value)]
            else:  # additionalProperties: true/false
                out[key] = value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [structural(child, f"{where}[{key}][{i}]") for i, child in enumerate(value)]
        else:
            raise SystemExit(f"{where}: unknown schema keyword {key!r}: add it to KEPT or DROPPED in {Path(__file__).name}")
    return out


def children(node: dict):
    """(key path, child schema) for the schema nodes directly under node."""
    for key in ("properties", "patternProperties"):
        for name, child in node.get(key, {}).items():
            yield (key, name), child
    for key in ("additionalProperties", "items", "not"):
        if isinstance(node.get(key), dict):
            yield (key,), node[key]
        elif isinstance(node.get(key), list):
            for i, child in enumerate(node[key]):
                yield (key, i), child
    for key in ("allOf", "anyOf", "oneOf"):
        for i, child in enumerate(node.get(key, [])):
            yield (key, i), child


def share(schemas: dict[str, dict]) -> tuple[dict, dict]:
    """Store every repeated subtree once: (definitions, schemas with $refs)."""
    count: dict[str, int] = {}
    first_seen: dict[str, str] = {}

    def tally(node: dict, where: str) -> None:
        text = compact(node)
        count[text] = count.get(text, 0) + 1
        first_seen.setdefault(text, where)
        for path, child in children(node):
            tally(child, f"{where}.{path[-1]}" if path[0] == "properties" else f"{where}[{'.'.join(map(str, path))}]")

    for name, schema in schemas.items():
        tally(schema, name)
    shared = {text for text, n in count.items() if n > 1 and len(text) >= SHARED_MIN_CHARS}
    definitions: dict[str, dict] = {}
    names: dict[str, str] = {}

    def rebuild(node: dict, top: bool = False) -> dict:
        text = compact(node)
        if text in shared and not top:
            if text not in names:
                names[text] = first_seen[text]
                definitions[names[text]] = rebuild(node, top=True)
            return {"$ref": f"#/definitions/{names[text]}"}
        out = dict(node)
        for key in ("properties", "patternProperties"):
            if key in node:
                out[key] = {name: rebuild(child) for name, child in node[key].items()}
        for key in ("additionalProperties", "items", "not"):
            if isinstance(node.get(key), dict):
                out[key] = rebuild(node[key])
            elif isinstance(node.get(key), list):
                out[key] = [rebuild(child) for child in node[key]]
        for key in ("allOf", "anyOf", "oneOf"):
            if key in node:
                out[key] = [rebuild(child) for child in node[key]]
        return out

    referenced = {name: rebuild(schema, top=True) for name, schema in schemas.items()}
    # A subtree repeated only inside one repeated parent is referenced once: put it back in place.
    uses: dict[str, int] = {}
    for text in map(compact, [*referenced.values(), *definitions.values()]):
        for name in re.findall(r'"\$ref":"#/definitions/([^"]+)"', text):
            uses[name] = uses.get(name, 0) + 1
    once = {name for name in definitions if uses.get(name, 0) == 1}

    def inline(node):
        if isinstance(node, dict):
            if set(node) == {"$ref"} and node["$ref"].removeprefix("#/definitions/") in once:
                return inline(definitions[node["$ref"].removeprefix("#/definitions/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    kept = {name: inline(definition) for name, definition in sorted(definitions.items()) if name not in once}
    return kept, {name: inline(schema) for name, schema in referenced.items()}


def load_schemas(document: dict) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema, with the shared subtrees expanded back."""
    definitions = document["definitions"]

    def expand(node):
        if isinstance(node, dict):
            if set(node) == {"$ref"}:
                return expand(definitions[node["$ref"].removeprefix("#/definitions/")])
            return {key: expand(value) for key, value in node.items()}
        if isinstance(node, list):
            return [expand(value) for value in node]
        return node

    return {(api_version, kind): expand(schema)
            for api_version, kinds in document["schemas"].items() for kind, schema in kinds.items()}


def provenance(crd_dir: Path, crds: list[tuple[Path, dict]]) -> dict:
    source = {"files": {path.name: {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()} for path, _ in crds}}
    generators = {crd["metadata"].get("annotations", {}).get("controller-gen.kubebuilder.io/version") for _, crd in crds}
    if generators - {None}:
        source["controller-gen.kubebuilder.io/version"] = ", ".join(sorted(generators - {None}))
    versions = set()
    for _, crd in crds:
        labels = crd["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/version", "kuberay.io/version", "helm.sh/chart"):
            if key in labels:
                versions.add(f"{key}={labels[key]}")
    readme = crd_dir / "README.md"
    if readme.exists():
        text = readme.read_text()
        if match := re.search(r"commit ([0-9a-f]{7,40})", text):
            versions.add(f"ray-project/kuberay commit {match.group(1)}")
        if match := re.search(r"\b(?:KubeRay|kuberay)\s+v?(\d+\.\d+(?:\.\d+)?)", text):
            versions.add(f"KubeRay {match.group(1)}")
    source["kuberay"] = ", ".join(sorted(versions)) if versions else "unknown: see the files' sha256"
    return source


def extract(crd_dir: Path) -> dict:
    crds = []
    for path in sorted(crd_dir.glob("*.y*ml")):
        for crd in yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if isinstance(crd, dict) and crd.get("kind") == "CustomResourceDefinition":
                crds.append((path, crd))
    if not crds:
        raise SystemExit(f"no CustomResourceDefinition in {crd_dir}/*.yaml")
    schemas, kept = {}, []
    for path, crd in crds:
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served", True) or version.get("deprecated", False):
                continue
            schema = version["schema"]["openAPIV3Schema"]
            if "$ref" in compact(schema):
                raise SystemExit(f"{path.name}: the schema holds a $ref, which this file format reserves")
            schemas[(f"{group}/{version['name']}", kind)] = structural(schema, f"{group}/{version['name']} {kind}")
            kept.append((f"{group}/{version['name']}", kind))
    # Definitions are named after where they first occur: "RayCluster.spec.headGroupSpec"
    # ("RayCluster@v1.spec..." where two versions of a kind are kept).
    kinds = [kind for _, kind in kept]
    schemas = {(kind if kinds.count(kind) == 1 else f"{kind}@{api_version.split('/')[-1]}"): schema
               for (api_version, kind), schema in schemas.items()}
    definitions, referenced = share(schemas)
    document = {
        "about": "Structural part of KubeRay's CRD openAPIV3Schemas (no descriptions), written by "
                 "scripts/extract_crd_schemas.py; do not edit by hand.",
        "source": provenance(crd_dir, crds),
        "schemas": {},
        "definitions": definitions,
    }
    for (api_version, kind), schema in zip(kept, referenced.values()):
        document["schemas"].setdefault(api_version, {})[kind] = schema
    # The stored form must give back exactly the structural schemas.
    assert load_schemas(json.loads(render(document))) == dict(zip(kept, schemas.values()))
    return document


def render(document: dict) -> str:
    """Readable at the top, one line per schema and per definition (diffs stay local)."""

    def block(entries: list[str], indent: str) -> str:
        if not entries:
            return "{}"
        return "{\n" + ",\n".join(f"{indent}  {entry}" for entry in entries) + f"\n{indent}}}"

    def pretty(value, indent: str) -> str:
        return json.dumps(value, indent=2, sort_keys=True).replace("\n", "\n" + indent)

    top = []
    for key, value in document.items():
        if key == "schemas":
            inner = [f"{json.dumps(api_version)}: " + block([f"{json.dumps(kind)}: {compact(schema)}" for kind, schema in kinds.items()], "    ")
                     for api_version, kinds in value.items()]
            top.append(f"{json.dumps(key)}: {block(inner, '  ')}")
        elif key == "definitions":
            top.append(f"{json.dumps(key)}: " + block([f"{json.dumps(name)}: {compact(entry)}" for name, entry in value.items()], "  "))
        else:
            top.append(f"{json.dumps(key)}: {pretty(value, '  ')}")
    return block(top, "") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("crd_dir", type=Path, help="folder of KubeRay CRD YAMLs (ray.io_rayservices.yaml, ray.io_rayclusters.yaml)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT.relative_to(REPO)}")
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = parser.parse_args(argv)
    text = render(extract(args.crd_dir))
    if args.check:
        if not args.out.exists() or args.out.read_text() != text:
            print(f"{args.out} differs from what {args.crd_dir} gives: rerun without --check", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date with {args.crd_dir}")
        return 0
    args.out.write_text(text)
    kinds = [f"{v} {k}" for v, ks in json.loads(text)["schemas"].items() for k in ks]
    print(f"wrote {args.out} ({len(text.encode())} bytes): {', '.join(kinds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
