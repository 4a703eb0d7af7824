"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

    save_checkpoint(folder, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "state": {"step": 10}, "data_rng": random.getstate()})
    saved = load_checkpoint(folder)  # the same structure, or None when the folder has none

A checkpoint is any nest of dicts, lists, tuples, tensors and JSON values (an
optimizer's state_dict has int keys and tuples; random.getstate() is a tuple):
checkpoint.json holds that structure with each tensor replaced by its name in
the safetensors file it names. A new save writes a new tensors file, then
replaces checkpoint.json atomically, then removes the old file, so a save
killed at any point leaves the previous checkpoint whole.

Converting a run written by the older trainers (checkpoint.pt, a torch pickle):

    python -m dalleflow.train.checkpoint --convert-legacy runs/diffusion

That command is the one place in the project that unpickles: it loads the
run's own legacy file once (weights_only=False, so only on a file you wrote
yourself) and writes the format above beside it.
"""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

INDEX = "checkpoint.json"
LEGACY = "checkpoint.pt"


def save_checkpoint(folder: str | Path, checkpoint: dict[str, Any]) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    structure = _flatten(checkpoint, tensors)
    tensors_file = f"checkpoint-{uuid.uuid4().hex[:12]}.safetensors"
    save_file(tensors, folder / tensors_file)
    previous = _tensors_file(folder)
    temporary = folder / f"{INDEX}.tmp"
    temporary.write_text(json.dumps({"tensors_file": tensors_file, "structure": structure}))
    temporary.replace(folder / INDEX)
    if previous is not None and previous != tensors_file:
        (folder / previous).unlink(missing_ok=True)


def load_checkpoint(folder: str | Path) -> dict[str, Any] | None:
    folder = Path(folder)
    if not (folder / INDEX).exists():
        return None
    index = json.loads((folder / INDEX).read_text())
    return _unflatten(index["structure"], load_file(folder / index["tensors_file"]))


def _tensors_file(folder: Path) -> str | None:
    if not (folder / INDEX).exists():
        return None
    return json.loads((folder / INDEX).read_text())["tensors_file"]


def _flatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON for `value`, each tensor moved into `tensors` under a fresh name."""
    if isinstance(value, torch.Tensor):
        name = str(len(tensors))
        # A copy of its own: safetensors refuses views and tensors sharing storage.
        tensors[name] = value.detach().cpu().contiguous().clone()
        return {"tensor": name}
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            return {"dict": {key: _flatten(item, tensors) for key, item in value.items()}}
        return {"pairs": [[_flatten(key, tensors), _flatten(item, tensors)] for key, item in value.items()]}
    if isinstance(value, tuple):
        return {"tuple": [_flatten(item, tensors) for item in value]}
    if isinstance(value, list):
        return {"list": [_flatten(item, tensors) for item in value]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"a checkpoint holds tensors, containers and JSON values, not {type(value).__name__}")


def _unflatten(node: dict, tensors: dict[str, torch.Tensor]) -> Any:
    ((kind, content),) = node.items()
    if kind == "tensor":
        return tensors[content]
    if kind == "dict":
        return {key: _unflatten(item, tensors) for key, item in content.items()}
    if kind == "pairs":
        return {_unflatten(key, tensors): _unflatten(item, tensors) for key, item in content}
    if kind == "tuple":
        return tuple(_unflatten(item, tensors) for item in content)
    if kind == "list":
        return [_unflatten(item, tensors) for item in content]
    if kind == "value":
        return content
    raise ValueError(f"{INDEX}: unknown node {kind!r}")


def convert_legacy(folder: str | Path) -> Path:
    """Writes the checkpoint of `folder`'s legacy checkpoint.pt in the format above.

    The only pickle load in the project, allowed here alone: the file is the
    run's own, written by this project's older trainer, and read once."""
    folder = Path(folder)
    legacy = torch.load(folder / LEGACY, weights_only=False, map_location="cpu")
    save_checkpoint(folder, legacy)
    return folder / INDEX


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--convert-legacy", metavar="FOLDER", required=True,
                        help="a run folder holding checkpoint.pt from an older trainer")
    args = parser.parse_args(argv)
    written = convert_legacy(args.convert_legacy)
    print(f"wrote {written}; checkpoint.pt is no longer read and can be deleted", flush=True)


if __name__ == "__main__":
    main()
