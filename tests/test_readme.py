"""The README's examples, run as written against the test session's server.

Only the address changes: http://127.0.0.1:8000 becomes the test server's.
"""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

from dalleflow_client import make_grid, read_png_metadata
from PIL import Image

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
DEFAULT_URL = "http://127.0.0.1:8000"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def use_section() -> str:
    return README.split("## Use it", 1)[1].split("\n## ", 1)[0]


def test_the_readme_starts_with_the_two_setup_commands():
    first_two = blocks("bash")[:2]
    assert "scripts/setup.sh && .venv/bin/dalleflow serve" in first_two[0]
    assert "scripts/setup.sh test && .venv/bin/python -m pytest" in first_two[1]
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert first_two[1].split("#")[0].strip() in ci


def test_the_curl_example(server_url):
    curl = re.findall(r"```bash\n(curl .*?)```", use_section(), flags=re.S)[0]
    done = subprocess.run(["bash", "-c", curl.replace(DEFAULT_URL, server_url)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = ast.literal_eval(done.stdout.strip())
    assert [rank for rank, *_ in printed] == [0, 1, 2, 3]  # 2 per generator, ranked together
    assert sorted(generator for _, generator, *_ in printed) == ["dalle", "dalle", "diffusion", "diffusion"]


def test_the_python_examples(server_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    examples = re.findall(r"```python\n(.*?)```", use_section(), flags=re.S)
    assert len(examples) == 3
    for example in examples:
        if "serve.get_app_handle" in example:
            continue  # a script of its own: test_the_ray_handle_example_as_a_script_of_its_own
        exec(compile(example.replace(DEFAULT_URL, server_url), "README.md", "exec"), {})
    assert (tmp_path / "candidates.png").is_file() and (tmp_path / "final.png").is_file()
    assert read_png_metadata(tmp_path / "final.png")["prompt"].startswith("a red circle")
    assert (tmp_path / "prompt-0.png").is_file() and (tmp_path / "prompt-1.png").is_file()


def test_the_ray_handle_example_as_a_script_of_its_own(server_url, tmp_path):
    """Run as a user runs it, a separate Python process on the machine that serves: it must join
    the running cluster, not start a Ray of its own. `address="auto"` finds the Ray on the machine
    by looking for its processes; this machine may run other Ray clusters beside the session's,
    so that one look is answered with the session's address alone. No RAY_ADDRESS: with it set,
    any example would connect, `ray.init` or not."""
    import ray

    (example,) = [block for block in re.findall(r"```python\n(.*?)```", use_section(), flags=re.S) if "serve.get_app_handle" in block]
    (tmp_path / "handle.py").write_text(example)
    (tmp_path / "run.py").write_text(
        "import functools, runpy\nimport ray._private.services as services\n"
        # Cached, as Ray's own is: ray.init clears that cache.
        f"services.find_gcs_addresses = functools.cache(lambda: [{ray.get_runtime_context().gcs_address!r}])\n"
        "runpy.run_path('handle.py', run_name='__main__')\n")  # fmt: skip
    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "run.py"], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert [rank for rank, *_ in printed] == [0, 1, 2, 3]
    assert sorted(generator for _, generator, _ in printed) == ["dalle", "dalle", "diffusion", "diffusion"]


def test_the_readme_says_where_the_commands_are_before_using_them():
    section = use_section()
    first_command = section.index("```bash\ndalleflow ")
    assert "source .venv/bin/activate" in section[:first_command]


def test_the_cli_example(server_url, tmp_path):
    lines = re.findall(r"```bash\n(dalleflow generate.*?)```", use_section(), flags=re.S)[0].strip().splitlines()
    environment = {**os.environ, "DALLEFLOW_URL": server_url}
    executable = str(Path(sys.executable).parent / "dalleflow")

    def run(line: str) -> str:
        done = subprocess.run([executable, *__import__("shlex").split(line)[1:]], capture_output=True, text=True,
                              timeout=300, env=environment, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stdout

    generated = run(lines[0])
    image_id = re.findall(r"\b[0-9a-f]{32}\b", generated)[0]
    run(lines[1].replace("<image id>", image_id))
    run(lines[2].replace("<image id>", image_id))
    assert (tmp_path / "final.png").is_file() and list((tmp_path / "out").glob("*.png"))


def run_bash_example(block: str, server_url: str, cwd: Path) -> str:
    """A bash block as written, with the venv's `dalleflow` first on PATH and the test server as DALLEFLOW_URL."""
    environment = {**os.environ, "DALLEFLOW_URL": server_url,
                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    done = subprocess.run(["bash", "-o", "pipefail", "-c", block], capture_output=True, text=True, timeout=300,
                          env=environment, cwd=cwd)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_cli_json_example(server_url, tmp_path):
    block = re.findall(r"```bash\n(dalleflow generate [^`]*--json.*?)```", use_section(), flags=re.S)[0]
    grid, table = run_bash_example(block, server_url, tmp_path).split(" ", 1)
    assert read_png_metadata(tmp_path / grid)["prompt"] == "a blue square above a red circle on a gray background"
    ranks = [int(rank) for rank in re.findall(r"\((\d+), ", table)]
    assert ranks == list(range(len(ranks))) and ranks


def test_the_interactive_example(server_url, tmp_path):
    block = re.findall(r"```bash\n(printf .*?)```", use_section(), flags=re.S)[0]
    transcript = run_bash_example(block, server_url, tmp_path)
    assert "at skip_rate 0.6: 4 ranked" in transcript
    (final,) = (tmp_path / "session").glob("final-*.png")
    metadata = read_png_metadata(final)
    assert (metadata["prompt"], metadata["parameters"]["skip_rate"]) == ("a red circle to the left of a blue square on a white background", 0.6)


def progress_section() -> str:
    return README.split("## Progress, cancel and jobs", 1)[1].split("\n## ", 1)[0]


def test_the_streaming_curl_example(server_url, tmp_path):
    curl = re.findall(r"```bash\n(curl .*?)```", progress_section(), flags=re.S)[0]
    events = ast.literal_eval(run_bash_example(curl.replace(DEFAULT_URL, server_url), server_url, tmp_path).strip())
    # The two generators' events interleave; each one's come in order, the result last.
    for generator, step_count in (("diffusion", 4), ("dalle", 8)):
        assert [(kind, step) for kind, name, step in events if name == generator] == [
            ("progress", step) for step in range(1, step_count + 1)] + [("generated", None)]
    assert events[-1] == ("result", None, None) and len(events) == 4 + 8 + 2 + 1


def test_the_streaming_and_jobs_python_example(server_url, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (example,) = re.findall(r"```python\n(.*?)```", progress_section(), flags=re.S)
    exec(compile(example.replace(DEFAULT_URL, server_url), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "diffusion: step 20 of 20" in printed and "dalle: step 8 of 8" in printed
    assert (tmp_path / "streamed.png").is_file() and (tmp_path / "job.png").is_file()


def test_the_jobs_cli_example(server_url, tmp_path):
    block = re.findall(r"```bash\n(job=.*?)```", progress_section(), flags=re.S)[0]
    printed = run_bash_example(block, server_url, tmp_path)
    assert re.match(r"[0-9a-f]{32} (queued|running|done)", printed)
    assert list((tmp_path / "jobs").glob("*-grid.png"))


def test_the_script_that_makes_the_readme_picture_still_runs(tmp_path):
    # The picture is remade whenever the embedded models change; a script that rots goes unseen.
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "grid.png"
    made = subprocess.run([sys.executable, "scripts/make_readme_grid.py", str(out)], cwd=root,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    ranked = re.findall(r"^(\d): (\w+) +seed \d+ score (-?[\d.]+) accepted (True|False)$", made.stdout, flags=re.M)
    assert [int(rank) for rank, *_ in ranked] == list(range(8))
    assert {generator for _, generator, _, _ in ranked} == {"diffusion", "dalle"}
    scores = [float(score) for _, _, score, _ in ranked]
    assert scores == sorted(scores, reverse=True)
    # 4 x 2 cells of 128 px (the 32 px candidates upscaled x4), each under its index.
    assert Image.open(out).size == make_grid([Image.new("RGB", (128, 128))] * 8, columns=4).size


def test_the_diffusers_config_example_loads_on_tiny_checkpoints_of_its_models(tmp_path):
    """The YAML of "Today's models", its /models paths pointing at tiny pipelines of the
    same kinds (a fp16-variant SDXL folder, a FLUX folder, a LoRA for the SDXL UNet)."""
    import yaml
    from diffusers import DiffusionPipeline, StableDiffusionXLPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from dalleflow.deployments.app import AppConfig
    from dalleflow.models.factory import create_model
    from tests.tiny_checkpoints import save_tiny_pipeline

    (example,) = [block for block in blocks("yaml") if "family: diffusers" in block]
    root = tmp_path / "models"
    sdxl = save_tiny_pipeline("sdxl", tmp_path / "sdxl", variant="fp16")
    save_tiny_pipeline("flux", tmp_path / "flux").rename(tmp_path / "flux" / "FLUX.1-schnell")
    pipeline = DiffusionPipeline.from_pretrained(sdxl, variant="fp16")
    pipeline.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights=False, target_modules=["to_q", "to_v"]))
    StableDiffusionXLPipeline.save_lora_weights(root / "lora" / "pixel-art", unet_lora_layers=get_peft_model_state_dict(pipeline.unet))
    sdxl.rename(root / "stable-diffusion-xl-base-1.0")
    (tmp_path / "flux" / "FLUX.1-schnell").rename(root / "FLUX.1-schnell")

    config = AppConfig.model_validate(yaml.safe_load(example.replace("/models/", f"{root}/")))
    assert config.refining_generator() == "sdxl"
    models = {name: create_model(spec) for name, spec in config.generators.items()}
    assert (models["sdxl"].height, models["sdxl"].width) == (768, 1024)
    assert models["sdxl"].pipeline.vae.use_slicing
    assert type(models["sdxl"].pipeline.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert (models["flux-schnell"].defaults.num_inference_steps, models["flux-schnell"].defaults.guidance_scale) == (4, 0.0)


# What a measured figure looks like in prose: a number with its unit.
FIGURE = re.compile(r"(\d+(?:\.\d+)?)\s?(x\b|%|s\b|ms\b)")


def results_numbers() -> list[float]:
    import json

    numbers: list[float] = []

    def walk(value) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            numbers.append(float(value))

    for path in sorted((Path(__file__).resolve().parent.parent / "bench" / "results").glob("*.json")):
        walk(json.loads(path.read_text()))
    return numbers


def is_in_results(number: str, unit: str, numbers: list[float]) -> bool:
    """The figure as a results file holds it, to the digits the README shows (a % as a share too)."""
    digits = len(number.split(".")[1]) if "." in number else 0
    value = float(number)
    forms = [(value, digits)] + ([(value / 100, digits + 2)] if unit == "%" else []) + (
        [(value / 1000, digits + 3)] if unit == "ms" else [])
    if unit == "%" and any(f"{held:.{digits}%}" == f"{number}%" for held in numbers):
        return True  # as the benches print a share: 0.3475 is "34.8%" (its binary value rounds to 0.347)
    return any(round(held, places) == round(form, places) for held in numbers for form, places in forms)


def test_every_figure_the_readme_quotes_is_a_number_a_bench_wrote():
    measured = [section for title, section in re.findall(r"\n## ([^\n]+)\n(.*?)(?=\n## |\Z)", README, flags=re.S)
                if title in ("Measure", "The embedded models")]  # fmt: skip
    assert len(measured) == 2
    numbers = results_numbers()
    figures = [figure for section in measured for figure in FIGURE.findall(section)]
    assert len(figures) > 20
    missing = [f"{number}{unit}" for number, unit in figures if not is_in_results(number, unit, numbers)]
    assert missing == [], f"figures in the README that no file in bench/results/ holds: {missing}"


def test_the_install_size_the_readme_gives_is_the_one_bench_install_size_wrote():
    import json

    measured = json.loads((Path(__file__).resolve().parent.parent / "bench" / "results" / "install_size.json").read_text())
    setup = README.split("## Two commands for a fresh machine", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"(\d+\.\d+) GB", setup) == [f"{measured['server_install_gb']:.1f}", f"{measured['test_install_gb']:.1f}"]


def test_every_results_file_records_its_making():
    import json

    for path in sorted((Path(__file__).resolve().parent.parent / "bench" / "results").glob("*.json")):
        record = json.loads(path.read_text())
        missing = [key for key in ("command", "machine", "commit", "date") if not record.get(key)]
        assert missing == [], f"{path.name} does not record its {missing}"
