"""How much disk an install takes: the files of every distribution a server install (dalleflow
and dalleflow-client, no extras) resolves to, and of the test install that `scripts/setup.sh test`
makes, measured in the venv this runs in, and the embedded weights among them.

    .venv/bin/python bench/install_size.py    # writes bench/results/install_size.json

Each distribution counts the files its RECORD lists (as pip installed them); the project's own
two count their package folders, what their wheels hold (an editable install's RECORD does not).
The venv's interpreter is a link to the system's and is not counted.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import sys
from pathlib import Path

import harness

ROOT = Path(__file__).resolve().parent.parent


def make_constraints():
    spec = importlib.util.spec_from_file_location("make_constraints", ROOT / "scripts" / "make_constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def folder_bytes(folder: Path) -> int:
    return sum(path.lstat().st_size for path in folder.rglob("*") if path.is_file() and "__pycache__" not in path.parts)


def distribution_bytes(name: str) -> int:
    seen: set[Path] = set()
    total = 0
    for file in importlib.metadata.distribution(name).files or []:
        path = Path(file.locate()).resolve()
        if path in seen or "__pycache__" in path.parts or not path.is_file():
            continue
        seen.add(path)
        total += path.stat().st_size
    return total


def install_bytes(extras: tuple[str, ...]) -> tuple[int, dict[str, int]]:
    """(bytes in all, bytes of each distribution) for dalleflow with these extras, its client and pip."""
    names = list(make_constraints().resolved({"dalleflow": extras, "dalleflow-client": ()})) + ["pip"]
    sizes = {name: distribution_bytes(name) for name in names}
    sizes["dalleflow"] = folder_bytes(ROOT / "dalleflow")
    sizes["dalleflow-client"] = folder_bytes(ROOT / "client" / "dalleflow_client")
    return sum(sizes.values()), sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "install_size.json")
    args = parser.parse_args()
    server_total, server_sizes = install_bytes(())
    test_total, _ = install_bytes(("test", "train"))
    largest = sorted(server_sizes.items(), key=lambda item: -item[1])[:8]
    result = {
        **harness.provenance(),
        "python": sys.version.split()[0],
        "venv": sys.prefix,  # the environment measured
        "server_install_gb": round(server_total / 1e9, 2),
        "test_install_gb": round(test_total / 1e9, 2),
        "embedded_weights_mb": round(folder_bytes(ROOT / "dalleflow" / "weights") / 1e6, 1),
        "server_distribution_count": len(server_sizes),
        "largest_in_server_install_mb": {name: round(size / 1e6, 1) for name, size in largest},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
