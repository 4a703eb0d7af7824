"""The CLIP ranker: scores images against a prompt with any open_clip model.

    ranker = ClipRanker.from_pretrained("local-dir:dalleflow/weights/shapes-clip")
    ranker.score("a red circle on the left on a white background", images)

The weight source is open_clip's own string: "local-dir:FOLDER" (a folder with
open_clip_config.json and open_clip_model.safetensors, which is what the
embedded ranker is), "hf-hub:ORG/REPO", or "MODEL_NAME@PRETRAINED_TAG" for
open_clip's pretrained registry (e.g. "ViT-L-14@openai") where the machine can
download.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from PIL import Image
from safetensors.torch import save_file

CONFIG_FOLDER = Path(__file__).parent / "configs"


def model_config(name: str) -> dict:
    """An embedded model config by name (open_clip's model_configs format)."""
    return json.loads((CONFIG_FOLDER / f"{name}.json").read_text())


def create_untrained(name: str) -> torch.nn.Module:
    open_clip.add_model_config(CONFIG_FOLDER)
    return open_clip.create_model(name, pretrained=None, device="cpu")


def save_local_dir(model: torch.nn.Module, config: dict, folder: str | Path) -> None:
    """Write a folder that open_clip loads with "local-dir:FOLDER"."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    preprocess = {"mean": list(model.visual.image_mean or open_clip.OPENAI_DATASET_MEAN),
                  "std": list(model.visual.image_std or open_clip.OPENAI_DATASET_STD)}
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": config, "preprocess_cfg": preprocess}, indent=1)
    )
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / "open_clip_model.safetensors")


class ClipRanker:
    def __init__(self, model: torch.nn.Module, preprocess, tokenizer, source: str):
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.source = source

    @classmethod
    def from_pretrained(cls, source: str, device: str = "cpu") -> ClipRanker:
        if "@" in source and not source.startswith(("local-dir:", "hf-hub:")):
            name, tag = source.split("@", 1)
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=tag, device=device)
            tokenizer = open_clip.get_tokenizer(name)
        else:
            model, _, preprocess = open_clip.create_model_and_transforms(source, device=device)
            tokenizer = open_clip.get_tokenizer(source)
        return cls(model, preprocess, tokenizer, source)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def score(self, prompt: str, images: list[Image.Image]) -> list[float]:
        """Cosine similarity x 100 of each image to the prompt (CLIP's logit scale)."""
        if not images:
            return []
        pixels = torch.stack([self.preprocess(im.convert("RGB")) for im in images]).to(self.device)
        text = self.tokenizer([prompt]).to(self.device)
        image_features = torch.nn.functional.normalize(self.model.encode_image(pixels), dim=-1)
        text_features = torch.nn.functional.normalize(self.model.encode_text(text), dim=-1)
        return (100.0 * image_features @ text_features.T).squeeze(1).tolist()

    @torch.inference_mode()
    def similarity(self, images: list[Image.Image], prompts: list[str]) -> torch.Tensor:
        """[images, prompts] cosine similarities, for retrieval checks."""
        pixels = torch.stack([self.preprocess(im.convert("RGB")) for im in images]).to(self.device)
        image_features = torch.nn.functional.normalize(self.model.encode_image(pixels), dim=-1)
        text_features = torch.nn.functional.normalize(
            self.model.encode_text(self.tokenizer(prompts).to(self.device)), dim=-1
        )
        return image_features @ text_features.T
