"""The server's answers as objects: ranked candidates with PIL images, grids and saving."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from functools import cached_property
from os import PathLike
from pathlib import Path

from PIL import Image

from .errors import DalleflowError
from .images import decode_base64_image, make_grid, read_png_metadata
from .schemas import Candidate, GenerateResponse, StageReport, UpscaleResponse


@dataclass(kw_only=True)
class _EncodedImage:
    image_base64: str = field(repr=False)

    @cached_property
    def image(self) -> Image.Image:
        """The PIL image, decoded on first use: reading ids and scores costs no decoding."""
        return decode_base64_image(self.image_base64)

    @cached_property
    def png(self) -> bytes:
        """The PNG as the server made, stored and answered it."""
        return base64.b64decode(self.image_base64)

    @property
    def metadata(self) -> dict[str, object]:
        """What the server wrote into the PNG: prompt, seed, generator, parameters, id..."""
        return read_png_metadata(self.png)

    def save(self, path: str | PathLike) -> Path:
        """Write the server's PNG as it is, metadata included; returns the path. Parent folders are made."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.png)
        return path


@dataclass(kw_only=True)
class CandidateImage(_EncodedImage):
    """One ranked image of an answer. Pass it to refine or upscale to continue from it."""

    id: str
    generator: str
    rank: int  # 0 is the best
    clip_score: float
    seed: int
    width: int
    height: int
    prompt: str

    @classmethod
    def from_schema(cls, candidate: Candidate, prompt: str) -> CandidateImage:
        return cls(
            id=candidate.id,
            generator=candidate.generator,
            rank=candidate.rank,
            clip_score=candidate.clip_score,
            seed=candidate.seed,
            width=candidate.width,
            height=candidate.height,
            prompt=prompt,
            image_base64=candidate.image,
        )


@dataclass(kw_only=True)
class UpscaledImage(_EncodedImage):
    """The answer of upscale."""

    id: str
    width: int
    height: int
    source: CandidateImage | None = None  # what was upscaled, when the client knew it as a candidate

    @classmethod
    def from_schema(cls, response: UpscaleResponse, source: CandidateImage | None = None) -> UpscaledImage:
        return cls(
            id=response.id, width=response.width, height=response.height, image_base64=response.image, source=source
        )


class Result:
    """The answer of generate or refine: candidates ranked best first, and what each generator did."""

    def __init__(self, response: GenerateResponse):
        self.response = response
        self.candidates = [CandidateImage.from_schema(candidate, response.prompt) for candidate in response.candidates]

    @property
    def id(self) -> str:
        return self.response.id

    @property
    def prompt(self) -> str:
        return self.response.prompt

    @property
    def seed(self) -> int:
        return self.response.seed

    @property
    def generators(self) -> dict[str, StageReport]:
        return self.response.generators

    @property
    def warnings(self) -> list[str]:
        """What the answer could not honour (words its models do not know); empty from older servers."""
        return self.response.warnings

    @property
    def timings(self) -> dict[str, float]:
        return self.response.timings

    def __len__(self) -> int:
        return len(self.candidates)

    def __iter__(self):
        return iter(self.candidates)

    def __getitem__(self, index: int) -> CandidateImage:
        return self.candidates[index]

    def __repr__(self) -> str:
        return f"Result(id={self.id!r}, prompt={self.prompt!r}, candidates={len(self)})"

    @property
    def best(self) -> CandidateImage:
        self._require_candidates()
        return self.candidates[0]

    @property
    def metadata(self) -> dict[str, object]:
        """What a PNG of the whole answer (its grid) carries."""
        return {"prompt": self.prompt, "seed": self.seed, "id": self.id}

    def grid(self, columns: int | None = None, show_indices: bool = True) -> Image.Image:
        """All candidates in one image, in rank order; the drawn index is the one to use in `result[i]`."""
        self._require_candidates()
        return make_grid([candidate.image for candidate in self.candidates], columns, show_indices)

    def save(self, folder: str | PathLike) -> list[Path]:
        """Write each candidate as a PNG with metadata into `folder` (made if missing); returns the paths, best first."""
        folder = Path(folder)
        return [
            candidate.save(folder / f"{_file_safe(self.id)[:8]}-{index:02d}-{_file_safe(candidate.generator)}.png")
            for index, candidate in enumerate(self.candidates)
        ]

    def _require_candidates(self) -> None:
        # An answer can be empty when every generator failed; say why instead of an IndexError.
        if not self.candidates:
            reports = ", ".join(
                f"{name}: {report.status}" + (f" ({report.error})" if report.error else "")
                for name, report in self.generators.items()
            )
            raise DalleflowError(f"the answer has no images ({reports or 'no generator ran'})")


def _file_safe(name: str) -> str:
    # Names come from the server; never let them reach outside the folder.
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)
