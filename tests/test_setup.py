"""scripts/setup.sh's decisions on the four distributions it is for, without a container.

Each machine is a PATH of small executables that behave as the distribution's would: a python3 of
its version whose ensurepip is missing until its venv package is installed, an apt-get that knows
the distribution's packages and installs them by adding those executables, an ldconfig that lists
what is installed. `--check` says what setup.sh would do; a full run happens in a copy of the
script, where the venvs' pip only writes down what it was asked to install.

What the distributions give: Debian 12 python3 3.11, Debian 13 3.13, Ubuntu 24.04 3.12, Ubuntu
22.04 3.10 (python3.11 in its universe); none has python3-venv by default.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SETUP = REPO / "scripts" / "setup.sh"


@dataclass
class Machine:
    """A fake machine: bin/ is its whole PATH, log its record of what was run."""

    root: Path
    bin: Path = field(init=False)
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.bin = self.root / "bin"
        self.bin.mkdir(parents=True)
        self.log = self.root / "log"
        self.log.touch()
        (self.root / "libraries").touch()
        (self.root / "apt").mkdir()
        # The few real tools setup.sh itself calls; everything else it finds must be a stub here.
        (self.bin / "dirname").symlink_to(shutil.which("dirname"))
        self.script("id", 'echo 0')  # root, as in a fresh container: no sudo
        self.script("ldconfig", f'echo "$(< "{self.root}/libraries")"')
        self.script("pip", f'echo "$0 $*" >> "{self.log}"', where=self.root)

    def script(self, name: str, body: str, where: Path | None = None) -> Path:
        path = (where or self.bin) / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
        return path

    def python(self, name: str, version: str, has_venv_module: bool = False) -> None:
        """A python that makes a venv only once its venv module is there; the venv's pip logs what it is asked."""
        marker = self.root / f"venv-module-{name}"
        if has_venv_module:
            marker.touch()
        self.script(name, f"""case "$*" in
  *version_info*) echo {version} ;;
  *ensurepip*) [ -e "{marker}" ] ;;
  "-m venv "*) [ -e "{marker}" ] || exit 1
    echo "{name} -m venv $3" >> "{self.log}"
    /bin/mkdir -p "$3/bin" && /bin/cp "{self.root}/pip" "$3/bin/pip" ;;
  *) exit 3 ;;
esac""")

    def apt_package(self, package: str, installs: str) -> None:
        self.script(package, installs, where=self.root / "apt")

    def with_apt(self) -> Machine:
        # A package apt does not know fails the install, as apt's "Unable to locate package" does.
        self.script("apt-get", f"""echo "apt-get $*" >> "{self.log}"
[ "$1" = install ] || exit 0
for package in "$@"; do
  case "$package" in -*|install) continue ;; esac
  [ -x "{self.root}/apt/$package" ] || exit 100
done
for package in "$@"; do case "$package" in -*|install) ;; *) "{self.root}/apt/$package" ;; esac; done""")
        for library, name in (("libvulkan1", "libvulkan.so.1"), ("libomp5", "libomp.so.5")):
            self.apt_package(library, f'echo "\t{name} (libc6,x86-64) => /usr/lib/{name}" >> "{self.root}/libraries"')
        self.apt_package("chromium", f'printf "#!/bin/bash\\n" > "{self.bin}/chromium"; /bin/chmod +x "{self.bin}/chromium"')
        return self

    def with_libraries(self) -> Machine:
        for library in ("libvulkan1", "libomp5"):
            subprocess.run([self.root / "apt" / library], check=True)
        return self

    def records(self) -> list[str]:
        return self.log.read_text().splitlines()


def distribution(root: Path, python3: str, extra_pythons: tuple[str, ...] = (), with_python3: bool = True) -> Machine:
    """A fresh install of a Debian-like distribution whose python3 is `python3` and whose apt also
    offers pythonX.Y for each of extra_pythons; with_python3=False is its bare container image."""
    machine = Machine(root).with_apt()
    for version in (python3, *extra_pythons):
        name = "python3" if version == python3 else f"python{version}"
        machine.python(name, version)
        # The interpreter as its package would lay it, and apart from it, its venv package.
        payload = (machine.bin / name).rename(machine.root / f"payload-{name}")
        machine.apt_package(name, f'/bin/cp "{payload}" "{machine.bin / name}"')
        machine.apt_package(f"{name}-venv", f': > "{machine.root}/venv-module-{name}"')
        if name == "python3" and with_python3:
            shutil.copy(payload, machine.bin / name)
    return machine


DEBIAN_12 = {"python3": "3.11"}
DEBIAN_13 = {"python3": "3.13"}
UBUNTU_22_04 = {"python3": "3.10", "extra_pythons": ("3.11",)}
UBUNTU_24_04 = {"python3": "3.12"}
DISTRIBUTIONS = {"debian-12": DEBIAN_12, "debian-13": DEBIAN_13, "ubuntu-22.04": UBUNTU_22_04, "ubuntu-24.04": UBUNTU_24_04}


def run_setup(machine: Machine, *args: str, script: Path = SETUP) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/bash", str(script), *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": str(machine.bin), "HOME": str(machine.root)})  # fmt: skip


def check(machine: Machine, *args: str) -> dict[str, str]:
    done = run_setup(machine, "--check", *args)
    assert done.returncode == 0, done.stderr
    said = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    if said["python"] != "none yet":
        said["python"] = Path(said["python"]).name
    return said


@pytest.mark.parametrize(("name", "python3", "venv_package"), [
    ("debian-12", "3.11", "python3-venv"), ("debian-13", "3.13", "python3-venv"), ("ubuntu-24.04", "3.12", "python3-venv")])
def test_a_new_enough_python3_is_used_and_its_missing_venv_package_is_installed(tmp_path, name, python3, venv_package):
    machine = distribution(tmp_path, **DISTRIBUTIONS[name]).with_libraries()
    assert check(machine) == {"python": "python3", "apt": venv_package}


def test_ubuntu_22_04s_python3_is_too_old_so_python3_11_comes_from_apt(tmp_path):
    machine = distribution(tmp_path, **UBUNTU_22_04).with_libraries()
    assert check(machine) == {"python": "none yet", "apt": "python3.11 python3.11-venv"}


def test_a_bare_container_gets_python3_first(tmp_path):
    machine = distribution(tmp_path, **DEBIAN_13, with_python3=False)
    assert check(machine) == {"python": "none yet", "apt": "python3 python3-venv libvulkan1 libomp5"}
    assert check(machine, "test")["apt"] == "python3 python3-venv libvulkan1 libomp5 chromium"


def test_the_newest_versioned_python_is_taken_when_python3_is_too_old(tmp_path):
    machine = Machine(tmp_path).with_apt().with_libraries()
    machine.python("python3", "3.10", has_venv_module=True)
    machine.python("python3.11", "3.11", has_venv_module=True)
    machine.python("python3.12", "3.12")
    assert check(machine) == {"python": "python3.12", "apt": "python3.12-venv"}
    (tmp_path / "venv-module-python3.12").touch()
    assert check(machine) == {"python": "python3.12", "apt": "nothing"}


def test_python3_is_preferred_when_it_is_new_enough(tmp_path):
    machine = Machine(tmp_path).with_apt().with_libraries()
    machine.python("python3", "3.11", has_venv_module=True)
    machine.python("python3.13", "3.13", has_venv_module=True)
    assert check(machine) == {"python": "python3", "apt": "nothing"}


def test_without_apt_a_too_old_python_stops_with_what_to_install(tmp_path):
    machine = Machine(tmp_path).with_apt().with_libraries()
    (machine.bin / "apt-get").unlink()
    machine.python("python3", "3.10", has_venv_module=True)
    done = run_setup(machine, "--check")
    assert done.returncode == 1 and done.stdout == ""
    assert "needs Python 3.11 or newer" in done.stderr and "python3 is 3.10" in done.stderr
    assert "python3.11 python3.11-venv" in done.stderr
    assert run_setup(machine).returncode == 1 and machine.records() == []


def test_without_apt_a_python_with_no_ensurepip_stops_naming_its_venv_package(tmp_path):
    machine = Machine(tmp_path).with_apt().with_libraries()
    (machine.bin / "apt-get").unlink()
    machine.python("python3", "3.10", has_venv_module=True)
    machine.python("python3.12", "3.12")
    done = run_setup(machine, "--check")
    assert done.returncode == 1
    assert "python3.12 cannot make a venv: its ensurepip module is missing" in done.stderr
    assert "python3.12-venv" in done.stderr


def test_missing_libraries_are_asked_of_apt(tmp_path):
    machine = Machine(tmp_path).with_apt()
    machine.python("python3", "3.12", has_venv_module=True)
    assert check(machine) == {"python": "python3", "apt": "libvulkan1 libomp5"}


def copy_of_setup(tmp_path: Path) -> Path:
    """setup.sh in a tree of its own: its venvs and installs happen there, not in this checkout."""
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy(SETUP, tree / "scripts" / "setup.sh")
    return tree / "scripts" / "setup.sh"


@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
def test_setup_test_on_a_bare_container_installs_a_python_and_makes_both_venvs_with_it(tmp_path, name):
    machine = distribution(tmp_path / "machine", **DISTRIBUTIONS[name], with_python3=False)
    done = run_setup(machine, "test", script=copy_of_setup(tmp_path))
    assert done.returncode == 0, done.stderr
    records = machine.records()
    installs = [line.split("-qq ", 1)[1] for line in records if line.startswith("apt-get install")]
    expected_python = "python3.11" if name == "ubuntu-22.04" else "python3"
    assert installs == ["python3 python3-venv libvulkan1 libomp5 chromium"] + (
        ["python3.11 python3.11-venv"] if name == "ubuntu-22.04" else [])
    assert records.count("apt-get update -qq") == 1
    assert [line for line in records if " -m venv " in line] == [f"{expected_python} -m venv .venv",
                                                                 f"{expected_python} -m venv .venv-jina"]  # fmt: skip
    assert ".venv/bin/pip install -q -c constraints.txt -e ./client -e .[test,train]" in records
    assert any(line.startswith(".venv-jina/bin/pip install -q jina==3.34.0") for line in records)
    assert f"using {machine.bin / expected_python}" in done.stdout


def test_a_second_run_installs_nothing_more_with_apt(tmp_path):
    machine = distribution(tmp_path / "machine", **UBUNTU_24_04, with_python3=False)
    script = copy_of_setup(tmp_path)
    assert run_setup(machine, script=script).returncode == 0
    machine.log.write_text("")
    done = run_setup(machine, script=script)
    assert done.returncode == 0, done.stderr
    assert not any(line.startswith("apt-get") for line in machine.records())


def test_when_apt_cannot_give_a_new_enough_python_setup_stops_saying_what_to_install(tmp_path):
    machine = Machine(tmp_path / "machine").with_apt().with_libraries()
    machine.python("python3", "3.10", has_venv_module=True)  # Debian 11: apt has no python3.11
    done = run_setup(machine, script=copy_of_setup(tmp_path))
    assert done.returncode == 1
    assert "apt-get could not install python3.11 python3.11-venv" in done.stderr
    assert "Python 3.11 or newer" in done.stderr
    assert not any(" -m venv " in line for line in machine.records())


def test_an_apt_install_that_does_not_help_stops_instead_of_looping(tmp_path):
    machine = Machine(tmp_path / "machine").with_apt().with_libraries()
    machine.python("python3", "3.12")
    machine.apt_package("python3-venv", "")  # installs, yet ensurepip stays missing (a python3 not apt's)
    done = run_setup(machine, script=copy_of_setup(tmp_path))
    assert done.returncode == 1
    assert "apt installed python3-venv, yet" in done.stderr
    assert [line for line in machine.records() if line.startswith("apt-get install")] == ["apt-get install -y -qq python3-venv"]


def test_the_readme_and_ci_still_start_with_setup_sh():
    readme = (REPO / "README.md").read_text()
    assert "bash scripts/setup.sh && .venv/bin/dalleflow serve" in readme
    assert "bash scripts/setup.sh test && .venv/bin/python -m pytest -q" in readme
