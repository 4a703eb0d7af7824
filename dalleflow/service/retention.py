"""Retention: the image store kept within an age and a total size, oldest files first.

What the store holds: images (PNG), and per job its record, its stored request and, when
one was asked for, a cancel note. Everything ages out by its file's modification time, but
what a live job needs: a queued or running job's record and request, and any stored image
its request names (a refine's source). A finished job's files go together.

The job queue (deployments/jobs.py) prunes every PRUNE_EVERY_S with the app's `retention`
settings; `dalleflow store` inspects and prunes a store by hand.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

PRUNE_EVERY_S = 3600.0
UNFINISHED = ("queued", "running")


class Retention(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_age_days: float | None = Field(30.0, gt=0, description="Files older than this go; None keeps them.")
    max_total_mb: float | None = Field(10240.0, gt=0, description="Past this, the oldest files go first; None: no cap.")


@dataclasses.dataclass
class StoreUsage:
    files: int
    bytes: int
    oldest_s: float | None  # age of the oldest file
    kept_for_live_jobs: int


@dataclasses.dataclass
class Pruned:
    files: int
    bytes: int


def _live_paths(root: Path) -> set[Path]:
    """The files a queued or running job needs."""
    keep: set[Path] = set()
    for record in root.glob("??/*.json"):
        job_id = record.name.removesuffix(".json")
        if "." in job_id:  # a stored request (ID.request.json), not a record
            continue
        try:
            status = json.loads(record.read_text()).get("status")
        except (OSError, ValueError):
            continue
        if status not in UNFINISHED:
            continue
        request = record.with_name(f"{job_id}.request.json")
        keep |= {record, request, record.with_suffix(".cancel")}
        try:
            image_id = json.loads(request.read_text())["job"]["request"].get("image_id")
        except (OSError, ValueError, KeyError, TypeError):
            image_id = None
        if image_id:
            keep.add(root / image_id[:2] / f"{image_id}.png")
    return keep


def _group_of(path: Path) -> str:
    """Files that go together: a job's record, request and note share its id."""
    return path.name.split(".", 1)[0]


def _files(root: Path) -> list[Path]:
    return [path for path in root.glob("??/*") if path.is_file() and not path.name.endswith(".tmp")]


def usage(root: str | Path) -> StoreUsage:
    root = Path(root)
    files = _files(root)
    now = time.time()
    mtimes = [path.stat().st_mtime for path in files]
    return StoreUsage(files=len(files), bytes=sum(path.stat().st_size for path in files),
                      oldest_s=now - min(mtimes) if mtimes else None, kept_for_live_jobs=len(_live_paths(root) & set(files)))  # fmt: skip


def prune(root: str | Path, retention: Retention, now: float | None = None) -> Pruned:
    """Removes what is older than max_age_days, then the oldest until the store is within
    max_total_mb; what live jobs need stays (see the module docstring)."""
    root = Path(root)
    now = time.time() if now is None else now
    keep = _live_paths(root)
    groups: dict[str, list[Path]] = {}
    for path in _files(root):
        groups.setdefault(_group_of(path), []).append(path)
    # A group is as old as its newest file; a group with anything a live job needs is kept whole.
    candidates = sorted(((max(p.stat().st_mtime for p in paths), paths) for paths in groups.values()
                         if not keep & set(paths)), key=lambda item: item[0])  # fmt: skip
    total = sum(path.stat().st_size for paths in groups.values() for path in paths)
    limit = retention.max_total_mb * 1024 * 1024 if retention.max_total_mb is not None else None
    max_age_s = retention.max_age_days * 86400 if retention.max_age_days is not None else None
    removed = Pruned(0, 0)
    for newest, paths in candidates:
        too_old = max_age_s is not None and now - newest > max_age_s
        too_big = limit is not None and total > limit
        if not (too_old or too_big):
            break  # the rest are newer, and the store is within its size
        for path in paths:
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            total -= size
            removed.files += 1
            removed.bytes += size
    return removed
