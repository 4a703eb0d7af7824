"""The image store pruned to its retention: oldest first, by age and by size, with what a
queued or running job needs kept; and `dalleflow store`, which shows and prunes it."""

import json
import os
import time

from dalleflow.cli import main
from dalleflow.service.retention import Retention, prune, usage
from dalleflow.service.store import ImageStore

MB = 1024 * 1024


def aged(path, days: float) -> None:
    then = time.time() - days * 86400
    os.utime(path, (then, then))


def fill(store: ImageStore) -> dict[str, str]:
    """Six 1 MB images, 6 to 1 days old; a finished job and a running one (refining image c): 3
    files a live job needs (its record, its request, its source)."""
    ids = {}
    for age, name in zip(range(6, 0, -1), "abcdef"):
        ids[name] = store.save_png(os.urandom(MB))
        aged(store._path(ids[name]), age)
    for status, job_id, source in (("done", "1" * 32, ids["a"]), ("running", "2" * 32, ids["c"])):
        store.save_job(job_id, json.dumps({"id": job_id, "status": status}))
        store.save_job_request(job_id, json.dumps({"job": {"kind": "refine", "request": {"image_id": source}}, "runs": 0}))
        for suffix in (".json", ".request.json"):
            aged(store._path(job_id, suffix, "job"), 7)
    return ids


def present(store: ImageStore, ids: dict[str, str]) -> str:
    return "".join(name for name, image_id in ids.items() if store._path(image_id).is_file())


def test_past_its_size_the_store_is_pruned_oldest_first_keeping_what_a_live_job_needs(tmp_path):
    store = ImageStore(tmp_path)
    ids = fill(store)
    pruned = prune(tmp_path, Retention(max_age_days=None, max_total_mb=3.5))
    # Within 3.5 MB: a, b and d go (c is the running job's source); the finished job's files too.
    assert present(store, ids) == "cef"
    assert not store._path("1" * 32, ".json", "job").exists() and not store._path("1" * 32, ".request.json", "job").exists()
    assert store._path("2" * 32, ".json", "job").exists() and store._path("2" * 32, ".request.json", "job").exists()
    assert pruned.files == 5 and usage(tmp_path).bytes <= 3.5 * MB


def test_past_its_age_a_file_goes_whatever_the_size(tmp_path):
    store = ImageStore(tmp_path)
    ids = fill(store)
    prune(tmp_path, Retention(max_age_days=3.5, max_total_mb=None))
    assert present(store, ids) == "cdef"  # c is older, but the running job needs it
    assert prune(tmp_path, Retention(max_age_days=3.5, max_total_mb=None)).files == 0


def test_the_cli_shows_and_prunes_a_store(tmp_path, capsys):
    store = ImageStore(tmp_path)
    ids = fill(store)
    assert main(["store", "--path", str(tmp_path)]) == 0
    assert "10 files, 6.0 MB, oldest 7.0 days, 3 kept for queued or running jobs" in capsys.readouterr().out
    assert main(["store", "--path", str(tmp_path), "--prune", "--max-age-days", "2.5", "--max-total-mb", "100"]) == 0
    assert "removed 5 files" in capsys.readouterr().out and present(store, ids) == "cef"
