"""Writes constraints.txt: every package the server, the client, the tests and training resolve
to, at the version installed in the environment this runs in (a venv made by
`bash scripts/setup.sh test`), the project's own two distributions left out.

    .venv/bin/python scripts/make_constraints.py            # rewrites constraints.txt
    .venv/bin/python scripts/make_constraints.py --stdout   # prints it instead

pyproject.toml keeps floors (what the code needs); constraints.txt is what was resolved and
tested, which scripts/setup.sh and cluster/Dockerfile install with `-c constraints.txt`.
Only what the project's requirements reach is pinned, following each package's own metadata:
a tool installed by hand into the venv stays out.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# The project's own distributions, read from their pyproject.toml (an editable install's
# metadata may be older than the checkout), with the extras setup.sh's test install takes.
OWN = {"dalleflow": (ROOT / "pyproject.toml", ("test", "train")), "dalleflow-client": (ROOT / "client" / "pyproject.toml", ())}


def own_requirements(name: str, extras: tuple[str, ...] | None = None) -> list[Requirement]:
    pyproject, default_extras = OWN[name]
    extras = default_extras if extras is None else extras
    project = tomllib.loads(pyproject.read_text())["project"]
    texts = list(project.get("dependencies", []))
    for extra in extras:
        texts += project["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


def applies(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    environment = default_environment()
    return any(requirement.marker.evaluate({**environment, "extra": extra}) for extra in extras | {""})


def resolved(own_extras: dict[str, tuple[str, ...]] | None = None) -> dict[str, str]:
    """{distribution name as installed: version} for all the project's requirements reach, with
    the extras own_extras names for each own distribution (default: setup.sh test's)."""
    own_extras = own_extras or {}
    pinned: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    queue = [Requirement(name) for name in OWN]
    while queue:
        requirement = queue.pop()
        key = canonicalize_name(requirement.name)
        extras = {canonicalize_name(extra) for extra in requirement.extras}
        if (key, frozenset(extras)) in seen:
            continue
        seen.add((key, frozenset(extras)))
        if key in OWN:
            queue += [child for child in own_requirements(key, own_extras.get(key)) if applies(child, set())]
            continue
        try:
            distribution = importlib.metadata.distribution(key)
        except importlib.metadata.PackageNotFoundError:
            sys.exit(f"{requirement} is required but not installed in {sys.prefix}: run `bash scripts/setup.sh test` first")
        pinned[distribution.metadata["Name"]] = distribution.version
        for text in distribution.requires or []:
            child = Requirement(text)
            if applies(child, extras):
                queue.append(child)
    return pinned


def render(pinned: dict[str, str]) -> str:
    environment = default_environment()
    header = [
        "# Every package dalleflow, dalleflow-client and their test and train extras resolve to, as tested.",
        "# Made by `.venv/bin/python scripts/make_constraints.py` in a venv of `bash scripts/setup.sh test`",
        f"# (Python {environment['python_version']}, {environment['sys_platform']} {environment['platform_machine']});"
        " edit pyproject.toml, reinstall, and run it again rather than editing this file.",
    ]
    return "\n".join(header + [f"{name}=={version}" for name, version in sorted(pinned.items(), key=lambda item: item[0].lower())]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stdout", action="store_true", help="print the constraints instead of writing constraints.txt")
    args = parser.parse_args(argv)
    text = render(resolved())
    if args.stdout:
        sys.stdout.write(text)
    else:
        (ROOT / "constraints.txt").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
