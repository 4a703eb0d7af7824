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

from dalleflow.models.batching import run_in_fixed_rows

CONFIG_FOLDER = Path(__file__).parent / "configs"


def model_config(name: str) -> dict:
    """An embedded model config by name (open_clip's model_configs format)."""
    return json.loads((CONFIG_FOLDER / f"{name}.json").read_text())


def create_untrained(name: str) -> torch.nn.Module:
    open_clip.add_model_config(CONFIG_FOLDER)
    return open_clip.create_model(name, pretrained=None, device="cpu")


def save_local_dir(model: torch.nn.Module, config: dict, folder: str | Path, dtype: torch.dtype | None = None) -> None:
    """Write a folder that open_clip loads with "local-dir:FOLDER" (its floating tensors in `dtype`
    where one is given: open_clip loads them into the model's own float32)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    preprocess = {"mean": list(model.visual.image_mean or open_clip.OPENAI_DATASET_MEAN),
                  "std": list(model.visual.image_std or open_clip.OPENAI_DATASET_STD)}
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": config, "preprocess_cfg": preprocess}, indent=1)
    )
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, folder / "open_clip_model.safetensors")


class ClipRanker:
    def __init__(self, model: torch.nn.Module, preprocess, tokenizer, source: str, batch_rows: int = 8):
        """batch_rows: the one batch shape the encoders run at, so a score never
        depends on what else was scored beside it (see run_in_fixed_rows)."""
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
        self.batch_rows = batch_rows
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.source = source

    @classmethod
    def from_pretrained(cls, source: str, device: str = "cpu", batch_rows: int = 8) -> ClipRanker:
        if "@" in source and not source.startswith(("local-dir:", "hf-hub:")):
            name, tag = source.split("@", 1)
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=tag, device=device)
            tokenizer = open_clip.get_tokenizer(name)
        else:
            model, _, preprocess = open_clip.create_model_and_transforms(source, device=device)
            tokenizer = open_clip.get_tokenizer(source)
        return cls(model, preprocess, tokenizer, source, batch_rows)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def score(self, prompt: str, images: list[Image.Image]) -> list[float]:
        """Cosine similarity x 100 of each image to the prompt (CLIP's logit scale)."""
        return self.score_together([(prompt, images)])[0]

    @torch.inference_mode()
    def score_together(self, calls: list[tuple[str, list[Image.Image]]]) -> list[list[float]]:
        """score(prompt, images) for each call, all images and prompts encoded in one pass."""
        images = [image for _, call_images in calls for image in call_images]
        if not images:
            return [[] for _ in calls]
        pixels = torch.stack([self.preprocess(im.convert("RGB")) for im in images]).to(self.device)
        prompts = list(dict.fromkeys(prompt for prompt, _ in calls))
        text = self.tokenizer(prompts).to(self.device)
        image_features = torch.nn.functional.normalize(
            run_in_fixed_rows(self.model.encode_image, self.batch_rows, pixels), dim=-1)
        text_features = torch.nn.functional.normalize(
            run_in_fixed_rows(self.model.encode_text, self.batch_rows, text), dim=-1)
        answers, start = [], 0
        for prompt, call_images in calls:
            features = image_features[start : start + len(call_images)]
            # Row by row: a matrix product's rounding would depend on the batch again.
            prompt_features = text_features[prompts.index(prompt)]
            answers.append([100.0 * float((row * prompt_features).sum()) for row in features])
            start += len(call_images)
        return answers

    @torch.inference_mode()
    def embed_text(self, prompt: str) -> list[float]:
        """The prompt's unit-length CLIP text embedding (what dalle-flow set on the prompt's Document)."""
        features = self.model.encode_text(self.tokenizer([prompt]).to(self.device))
        return torch.nn.functional.normalize(features, dim=-1)[0].tolist()

    @torch.inference_mode()
    def similarity(self, images: list[Image.Image], prompts: list[str]) -> torch.Tensor:
        """[images, prompts] cosine similarities, for retrieval checks."""
        pixels = torch.stack([self.preprocess(im.convert("RGB")) for im in images]).to(self.device)
        image_features = torch.nn.functional.normalize(self.model.encode_image(pixels), dim=-1)
        text_features = torch.nn.functional.normalize(
            self.model.encode_text(self.tokenizer(prompts).to(self.device)), dim=-1
        )
        return image_features @ text_features.T
