"""Training checkpoints for the JAX trainers (VQGAN, DalleBart), without pickle.

    save(folder, {"params": params, "opt_state": opt_state}, state)
    trees, state = load(folder, like={"params": params, "opt_state": opt_state})

Arrays go to one msgpack file in the flax layout (dalleflow.models.dalle.msgpack_io),
keyed by their position in the flattened tree; the tree's shape comes from `like`
(the freshly initialised params and optimizer state), and `state` (step, minutes,
learning curve, data RNG) is JSON. The index is replaced atomically, so a save
killed at any point leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dalleflow.models.dalle import msgpack_io

INDEX = "checkpoint.json"


def save(folder: str | Path, trees: dict[str, Any], state: dict[str, Any]) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        name: {str(i): np.asarray(leaf) for i, leaf in enumerate(jax.tree_util.tree_leaves(tree))}
        for name, tree in trees.items()
    }
    file_name = f"arrays-{uuid.uuid4().hex[:8]}.msgpack"
    msgpack_io.save_tree(folder / file_name, arrays)
    previous = _arrays_file(folder)
    temporary = folder / f"{INDEX}.tmp"
    temporary.write_text(json.dumps({"arrays": file_name, "state": state}))
    os.replace(temporary, folder / INDEX)
    if previous and previous != file_name:
        (folder / previous).unlink(missing_ok=True)


def load(folder: str | Path, like: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The saved trees (shaped as `like`) and state, or None when the folder has no checkpoint."""
    folder = Path(folder)
    if not (folder / INDEX).is_file():
        return None
    index = json.loads((folder / INDEX).read_text())
    arrays = msgpack_io.load_tree(folder / index["arrays"])
    trees = {}
    for name, template in like.items():
        leaves, treedef = jax.tree_util.tree_flatten(template)
        saved = arrays[name]
        if len(saved) != len(leaves):
            raise ValueError(f"{folder}: {name} has {len(saved)} arrays, the model {len(leaves)}; another configuration?")
        trees[name] = jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(saved[str(i)]) for i in range(len(leaves))])
    return trees, index["state"]


def _arrays_file(folder: Path) -> str | None:
    if not (folder / INDEX).is_file():
        return None
    return json.loads((folder / INDEX).read_text())["arrays"]


def random_state(value):
    """random.getstate() as it comes back from the JSON state (lists where it had
    tuples), made fit for random.setstate again."""
    return tuple(random_state(v) for v in value) if isinstance(value, list) else value
