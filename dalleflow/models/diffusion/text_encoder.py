"""A word-level text encoder for the shapes-world diffusion model.

The world's captions use a few dozen words, so a word vocabulary and a 2-layer
transformer are enough, and far smaller than a BPE vocabulary of 49k rows.
Real checkpoints (Stable Diffusion) bring their own CLIP text encoder instead.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

PAD, UNKNOWN = "<pad>", "<unk>"


@dataclasses.dataclass
class TextEncoderConfig:
    vocab: list[str]  # index -> word; 0 is padding, 1 unknown
    max_length: int = 16  # the longest caption has 14 words
    width: int = 128  # token embedding size = the UNet's cross_attention_dim
    layers: int = 2
    heads: int = 4


class WordTokenizer:
    def __init__(self, vocab: list[str], max_length: int):
        self.vocab = vocab
        self.index = {word: i for i, word in enumerate(vocab)}
        self.max_length = max_length

    @property
    def known_words(self) -> frozenset[str]:
        """Every word with a token of its own: not padding, not the unknown token."""
        return frozenset(self.vocab) - {PAD, UNKNOWN}

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids [B, L] and a mask [B, L] that is 1 on real tokens."""
        ids = torch.zeros(len(prompts), self.max_length, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            words = prompt.lower().replace(",", " ").split()[: self.max_length]
            ids[row, : len(words)] = torch.tensor(
                [self.index.get(w, 1) for w in words], dtype=torch.long
            )
        return ids, (ids != 0).long()


class TextEncoder(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(len(config.vocab), config.width)
        self.position_embedding = nn.Parameter(torch.zeros(config.max_length, config.width))
        layer = nn.TransformerEncoderLayer(
            config.width, config.heads, 2 * config.width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(config.width)
        nn.init.normal_(self.position_embedding, std=0.02)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token states [B, L, W] and a pooled state [B, W] (mean of real tokens)."""
        hidden = self.token_embedding(ids) + self.position_embedding[: ids.shape[1]]
        # An empty prompt (classifier-free guidance's unconditional branch) has no
        # real token; let it attend to its padding rather than to nothing.
        is_empty = mask.sum(dim=1, keepdim=True) == 0
        attend = torch.where(is_empty, torch.ones_like(mask), mask).bool()
        hidden = self.final_norm(self.transformer(hidden, src_key_padding_mask=~attend))
        weights = attend.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
        return hidden, pooled

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(dataclasses.asdict(self.config), indent=1))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / "model.safetensors")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> TextEncoder:
        folder = Path(folder)
        config = TextEncoderConfig(**json.loads((folder / "config.json").read_text()))
        model = cls(config)
        model.load_state_dict(load_file(folder / "model.safetensors"))
        return model.eval()

    def tokenizer(self) -> WordTokenizer:
        return WordTokenizer(self.config.vocab, self.config.max_length)


def shapes_vocab() -> list[str]:
    """Every word the shapes world's captions use, after padding and unknown."""
    from dalleflow.shapes import world

    words = ["a", "on", "the", "background", "to", "of", "above"]
    words += [*world.COLOURS, *world.SHAPES, *world.POSITIONS, *world.BACKGROUNDS]
    return [PAD, UNKNOWN, *dict.fromkeys(words)]
