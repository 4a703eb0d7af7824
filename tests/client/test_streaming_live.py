"""The client's streams and jobs, and the CLI's progress bars and `jobs` command, against the running server."""

import json

import pytest

from dalleflow_client import AsyncClient, Client, RequestError, Result
from dalleflow_client.cli import main
from dalleflow_client.schemas import GeneratedEvent, ProgressEvent, ResultEvent

PROMPT = "a red circle to the left of a blue square on a white background"


@pytest.fixture(scope="module")
def client(server_url):
    with Client(server_url) as client:
        yield client


def test_generate_stream_gives_typed_progress_then_the_result(client):
    events = list(client.generate_stream(PROMPT, num_images=2, seed=5, num_inference_steps=3))
    steps = {name: [e.step for e in events if isinstance(e, ProgressEvent) and e.generator == name] for name in ("diffusion", "dalle")}
    assert steps == {"diffusion": [1, 2, 3], "dalle": list(range(1, 9))}
    assert sorted(e.generator for e in events if isinstance(e, GeneratedEvent)) == ["dalle", "diffusion"]
    assert isinstance(events[-1], ResultEvent) and len(events) == 3 + 8 + 2 + 1
    result = Result(events[-1].result)
    assert result.seed == 5 and len(result) == 4


def test_a_stream_refused_by_the_server_raises_the_field(client):
    with pytest.raises(RequestError, match="num_images") as caught:
        list(client.generate_stream(PROMPT, num_images=0))
    assert caught.value.status_code == 422


async def test_async_refine_stream(server_url, client):
    pick = client.generate(PROMPT, num_images=1, num_inference_steps=2, generators=["diffusion"]).best
    async with AsyncClient(server_url) as async_client:
        events = [e async for e in async_client.refine_stream(pick, PROMPT, skip_rate=0.5, num_images=2, num_inference_steps=4)]
    assert [(e.generator, e.step) for e in events if isinstance(e, ProgressEvent)] == [("refiner", 1), ("refiner", 2)]
    assert isinstance(events[-1], ResultEvent) and len(events[-1].result.candidates) == 2


def test_jobs_submit_wait_and_cancel(client):
    job = client.submit_generate(PROMPT, num_images=1, seed=2, num_inference_steps=2)
    seen = []
    done = client.wait_job(job.id, poll_interval=0.1, on_update=seen.append)
    assert done.status == "done", done.error  # a failed job says why
    assert seen[-1] == done and Result(done.result).best.seed == 2
    with pytest.raises(RequestError) as caught:
        client.cancel_job(job.id)
    assert caught.value.status_code == 409


async def test_async_jobs(server_url):
    async with AsyncClient(server_url) as client:
        job = await client.submit_generate(PROMPT, num_images=1, num_inference_steps=100)
        cancelled = await client.cancel_job(job.id)
        assert cancelled.status == "cancelled"
        assert (await client.job(job.id)).status == "cancelled"


def test_cli_generate_shows_a_progress_bar_per_generator(server_url, tmp_path, capsys):
    assert main(["generate", PROMPT, "--url", server_url, "--num-images", "1", "--num-inference-steps", "3", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "diffusion" in captured.err and "3/3" in captured.err and "1 images" in captured.err
    assert "dalle" in captured.err and "8/8" in captured.err
    assert captured.out.startswith("grid")


def test_cli_jobs_submit_status_wait(server_url, tmp_path, capsys):
    assert main(["jobs", "submit", PROMPT, "--url", server_url, "--num-images", "1", "--num-inference-steps", "2", "--seed", "4"]) == 0
    job_id = capsys.readouterr().out.strip()
    assert main(["jobs", "wait", job_id, "--url", server_url, "--out", str(tmp_path)]) == 0
    assert "grid" in capsys.readouterr().out and list(tmp_path.glob("*-grid.png"))
    assert main(["jobs", "status", job_id, "--url", server_url, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["status"] == "done" and status["result"]["candidates"][0]["seed"] == 4
    assert "image" not in status["result"]["candidates"][0]
    assert main(["jobs", "cancel", job_id, "--url", server_url]) == 1
    assert "409" in capsys.readouterr().err
