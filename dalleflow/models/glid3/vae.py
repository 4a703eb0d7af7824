"""The kl-f8 autoencoder GLID-3 XL decodes with, as diffusers' AutoencoderKL.

GLID-3 XL publishes it as kl-f8.pt, latent diffusion's whole AutoencoderKL module object
pickled by torch.save, which torch.load would rebuild by importing and running latent
diffusion's code (and weights_only=True refuses). Here its tensors are read without
running anything from the file: every class the pickle names, but torch's tensor
machinery and plain containers, unpickles as an inert record of its state, from which the
modules' parameters and buffers are collected and converted by diffusers' own latent
diffusion VAE converter. The same autoencoder ships as Stable Diffusion v1's vae/ folder,
which loads as it is.
"""

from __future__ import annotations

import collections
import pickle
import types
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

LATENT_SCALE = 0.18215
# What a pickle of modules needs besides its own classes: containers and torch's tensor
# rebuilders (torch itself resolves the storage types before asking).
_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set, ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset, ("__builtin__", "frozenset"): frozenset,
    ("builtins", "object"): object, ("__builtin__", "object"): object,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
}  # fmt: skip


class _Record:
    """Stands for a class of the pickle: keeps the state it is given and does nothing else."""

    def __init__(self, *args, **kwargs):
        self.__dict__["_arguments"] = args

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"_state": state})


class _InertUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        return type(name, (_Record,), {"__module__": f"inert:{module}"})


_INERT_PICKLE = types.SimpleNamespace(Unpickler=_InertUnpickler, load=lambda file, **kw: _InertUnpickler(file, **kw).load(),
                                      __name__="inert_pickle")  # fmt: skip


def read_pickled_module(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a module object saved whole by torch.save, no code from it run."""
    root = torch.load(Path(path), map_location="cpu", pickle_module=_INERT_PICKLE, weights_only=False)
    state: dict[str, torch.Tensor] = {}

    def collect(record, prefix: str) -> None:
        fields = getattr(record, "__dict__", {})
        for table in ("_parameters", "_buffers"):
            for name, tensor in (fields.get(table) or {}).items():
                if isinstance(tensor, torch.Tensor):
                    state[prefix + name] = tensor.detach().float()
        for name, child in (fields.get("_modules") or {}).items():
            if child is not None:
                collect(child, f"{prefix}{name}.")

    collect(root, "")
    if not state:
        raise ValueError(f"{Path(path).name}: no module with tensors in it")
    return state


def kl_f8_config(state: dict[str, torch.Tensor]) -> dict:
    """A diffusers AutoencoderKL config read from latent diffusion's encoder/decoder keys."""
    levels = len({key.split(".")[2] for key in state if key.startswith("encoder.down.")})
    blocks = len({key.split(".")[4] for key in state if key.startswith("encoder.down.0.block.")})
    channels = tuple(state[f"encoder.down.{level}.block.0.conv2.weight"].shape[0] for level in range(levels))
    return {
        "in_channels": state["encoder.conv_in.weight"].shape[1], "out_channels": state["decoder.conv_out.weight"].shape[0],
        "block_out_channels": channels, "layers_per_block": blocks,
        "down_block_types": ("DownEncoderBlock2D",) * levels, "up_block_types": ("UpDecoderBlock2D",) * levels,
        "latent_channels": state["post_quant_conv.weight"].shape[1], "norm_num_groups": 32,
        "scaling_factor": LATENT_SCALE,
    }  # fmt: skip


def load_kl_f8(source: str | Path) -> AutoencoderKL:
    """kl-f8.pt (a pickled module), a .safetensors / state-dict .pt/.ckpt of its keys, a diffusers
    AutoencoderKL folder, or a Stable Diffusion v1 folder (its vae/)."""
    source = Path(source)
    if source.is_dir():
        subfolder = "vae" if (source / "vae" / "config.json").is_file() else None
        if subfolder is None and not (source / "config.json").is_file():
            raise ValueError(f"vae: {source} is no AutoencoderKL folder (config.json) and holds no vae/ folder")
        return AutoencoderKL.from_pretrained(str(source), subfolder=subfolder).eval()
    if not source.is_file():
        raise FileNotFoundError(
            f"vae: no {source}; give GLID-3 XL's kl-f8.pt, or a kl-f8 AutoencoderKL folder (Stable Diffusion v1's vae/)"
        )
    if source.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(source)
    else:
        state = read_pickled_module(source)
    state = {key.removeprefix("first_stage_model."): value for key, value in state.items()}
    config = kl_f8_config(state)
    vae = AutoencoderKL(**config)
    vae.load_state_dict(convert_ldm_vae_checkpoint(state, config), strict=True)
    return vae.eval()
