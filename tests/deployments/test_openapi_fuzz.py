"""Fuzzing the served app from its own OpenAPI schema (schemathesis): no request, valid
or not, gets a 5xx. Bad input is the request's fault and answers 4xx naming the field.

schemathesis runs as its CLI (its pytest plugin fails on pytest 9.2), deterministic, with a
bounded number of cases: the schema's examples, its coverage phase (boundary values,
missing and wrongly typed fields), then CASES_PER_OPERATION random cases per operation,
valid and invalid. It works from a copy of the schema in which num_inference_steps and
num_images are required and have lower maxima, so every valid case is cheap on a CPU (left
out, they would take the server's defaults); the server keeps its own limits, and the
invalid cases still probe them. The copy also carries examples with a real image, so
refine, upscale and the image route are reached past their validation.

Then the inputs Python's JSON parser takes but schemathesis never makes (NaN, Infinity,
lone surrogates), each answered 422 naming its field.
"""

import json
import os
import subprocess
import sys

import httpx
import pytest

CASES_PER_OPERATION = 10
# The fuzzer's maxima for the fields that set how much work a valid request is.
CHEAP_MAXIMA = {"num_inference_steps": 2, "num_images": 2}
PROMPT = "a red circle on the left on a white background"


def cheapened(schema: dict) -> dict:
    """The schema with CHEAP_MAXIMA applied wherever those fields are declared, and the
    fields required: a valid request that left them out would get the server's defaults."""
    if isinstance(schema, dict):
        for name, limit in CHEAP_MAXIMA.items():
            field = schema.get("properties", {}).get(name)
            if isinstance(field, dict) and "maximum" in field:
                field["maximum"] = min(field["maximum"], limit)
                schema["required"] = sorted({*schema.get("required", []), name})
        for value in schema.values():
            cheapened(value)
    elif isinstance(schema, list):
        for value in schema:
            cheapened(value)
    return schema


def with_real_examples(schema: dict, image: dict) -> dict:
    """Examples naming an image the store holds, for the operations that need one."""
    components = schema["components"]["schemas"]
    components["RefineRequest"]["example"] = {"prompt": PROMPT, "image_id": image["id"], **CHEAP_MAXIMA}
    components["UpscaleRequest"]["example"] = {"image": image["image"]}
    [image_id] = [p for p in schema["paths"]["/v1/images/{image_id}"]["get"]["parameters"] if p["name"] == "image_id"]
    image_id["example"] = image["id"]
    return schema


@pytest.fixture(scope="module")
def stored_image(server_url) -> dict:
    answer = httpx.post(f"{server_url}/v1/generate", json={"prompt": PROMPT, **CHEAP_MAXIMA, "num_images": 1}, timeout=300)
    assert answer.status_code == 200, answer.text
    return answer.json()["candidates"][0]


def test_no_request_gets_a_server_error(server_url, stored_image, tmp_path):
    schema = httpx.get(f"{server_url}/openapi.json", timeout=30).json()
    schema_file = tmp_path / "openapi.json"
    schema_file.write_text(json.dumps(with_real_examples(cheapened(schema), stored_image)))
    report = tmp_path / "report.json"
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", str(schema_file), "--url", server_url,
         "--checks", "not_a_server_error", "--phases", "examples,coverage,fuzzing", "--mode", "all",
         "--max-examples", str(CASES_PER_OPERATION), "--generation-deterministic",
         "--workers", "1", "--request-timeout", "120",
         "--suppress-health-check", "all", "--no-color", "--report", "json", "--report-json-path", str(report)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert report.exists(), run.stdout[-6000:] + run.stderr[-3000:]
    summary = json.loads(report.read_text())
    print(f"schemathesis: {summary['test_cases']['generated']} cases in {summary['running_time']:.0f} s")
    assert run.returncode == 0 and summary["test_cases"]["with_failures"] == 0, run.stdout[-8000:]
    assert summary["operations"]["tested"] == summary["operations"]["total"] > 0
    assert summary["test_cases"]["errored"] == 0
    assert 200 <= summary["test_cases"]["generated"] <= 1500, summary["test_cases"]  # a few hundred, bounded
    # The examples reached past validation: refine and upscale accepted a case each.
    accepted = {name: sum(phase["accepted"] for phase in rates.values()) for name, rates in summary["valid_rates"].items()}
    assert accepted["POST /v1/refine"] > 0 and accepted["POST /v1/upscale"] > 0, summary["valid_rates"]


FAST = f'"num_inference_steps": 1, "num_images": 1, "prompt": "{PROMPT}"'


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/generate", f'{{{FAST}, "guidance_scale": NaN}}', "guidance_scale"),
        ("/v1/generate", f'{{{FAST}, "guidance_scale": -Infinity}}', "guidance_scale"),
        ("/v1/generate", f'{{{FAST}, "seed": 1e400}}', "seed"),
        ("/v1/generate", f'{{{FAST}, "prompt": "a red \\ud800circle"}}', "prompt"),
        ("/v1/generate", f'{{{FAST}, "negative_prompt": "\\udfff"}}', "negative_prompt"),
        ("/v1/generate", f'{{{FAST}, "generators": ["\\ud800"]}}', "generators"),
        ("/v1/refine", '{"prompt": "\\ud800", "image_id": "' + "0" * 32 + '"}', "prompt"),
    ],
)
def test_inputs_json_cannot_carry_back_are_422_naming_the_field(server_url, path, body, field):
    answer = httpx.post(server_url + path, content=body, headers={"content-type": "application/json"}, timeout=120)
    assert answer.status_code == 422, answer.text
    assert [problem["loc"][-1] for problem in answer.json()["detail"]] == [field]
