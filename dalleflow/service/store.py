"""Every image the service answers with is stored first: the PNG its model made,
byte for byte, with its metadata inside (service/images.py).

An id is 32 hex characters (a uuid4); the only way from a request to the
filesystem is through ids that match that pattern, so no request can name a
path. Job records (service/jobs.py) live here too, as <id>.json next to the
images, under the same ids and the same check.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

from dalleflow.service.errors import NotFound
from dalleflow.service.images import new_image_id, png_metadata

_ID = re.compile(r"^[0-9a-f]{32}$")


def default_store_path() -> Path:
    if path := os.environ.get("DALLEFLOW_STORE"):
        return Path(path)
    data_home = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return data_home / "dalleflow" / "images"


class ImageStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_store_path()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, item_id: str, suffix: str = ".png", kind: str = "image") -> Path:
        if not _ID.fullmatch(item_id):
            article = "an" if kind[0] in "aeiou" else "a"
            raise NotFound(f"{kind}_id {item_id!r} is not {article} {kind} id (32 hex characters)", field=f"{kind}_id")
        # Two levels of folders keep any one folder small.
        return self.root / item_id[:2] / f"{item_id}{suffix}"

    def save_png(self, png: bytes, image_id: str | None = None) -> str:
        """Stores the PNG as it is, under the id it carries (new_image_id) or a new one; returns the id."""
        image_id = image_id or new_image_id()
        path = self._path(image_id)
        path.parent.mkdir(exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(png)
        temporary.replace(path)  # a reader never sees half a file
        return image_id

    def png_bytes(self, image_id: str) -> bytes:
        path = self._path(image_id)
        if not path.is_file():
            raise NotFound(f"image_id {image_id!r}: no such image", field="image_id")
        return path.read_bytes()

    def metadata(self, image_id: str) -> dict:
        """What the PNG says of itself (prompt, seed, generator, parameters...), with its id."""
        return {**png_metadata(self.png_bytes(image_id)), "id": image_id}

    # Job records: JSON text the job code writes and reads (see service/jobs.py).

    def save_job(self, job_id: str, record: str) -> None:
        path = self._path(job_id, ".json", "job")
        path.parent.mkdir(exist_ok=True)
        temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")  # one per writer
        temporary.write_text(record)
        temporary.replace(path)  # a reader never sees half a record

    def job_record(self, job_id: str) -> str:
        path = self._path(job_id, ".json", "job")
        if not path.is_file():
            raise NotFound(f"job_id {job_id!r}: no such job", field="job_id")
        return path.read_text()

    def save_job_request(self, job_id: str, request: str) -> None:
        """The job's request, its seed drawn: what a restarted queue runs again."""
        path = self._path(job_id, ".request.json", "job")
        path.parent.mkdir(exist_ok=True)
        temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        temporary.write_text(request)
        temporary.replace(path)

    def job_request(self, job_id: str) -> str:
        path = self._path(job_id, ".request.json", "job")
        if not path.is_file():
            raise NotFound(f"job_id {job_id!r}: no request stored for it", field="job_id")
        return path.read_text()

    def job_ids(self) -> list[str]:
        """Every job with a record."""
        return [path.name.removesuffix(".json") for path in self.root.glob("??/*.json")
                if _ID.fullmatch(path.name.removesuffix(".json"))]  # fmt: skip

    def request_job_cancel(self, job_id: str) -> None:
        """Leaves a note for the ingress replica that runs the job (it checks for one every second)."""
        self._path(job_id, ".cancel", "job").touch()

    def is_job_cancel_requested(self, job_id: str) -> bool:
        return self._path(job_id, ".cancel", "job").is_file()
