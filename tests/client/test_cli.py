"""The client's command line: parsing, errors without a server, and the package's import rules."""

import argparse
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dalleflow_client.cli import _save_and_show, add_client_commands, main
from dalleflow_client.results import Result
from tests.client.test_results import answer


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_generate_options_map_to_the_api_names():
    args = parse(["generate", "a red circle", "--num-images", "2", "--seed", "3", "--num-inference-steps", "4",
                  "--guidance-scale", "5.5", "--negative-prompt", "blurry", "--generators", "dalle,diffusion",
                  "--out", "out", "--json"])  # fmt: skip
    assert (args.prompt, args.num_images, args.seed, args.num_inference_steps, args.guidance_scale) == (
        "a red circle", 2, 3, 4, 5.5
    )  # fmt: skip
    assert (args.negative_prompt, args.generators, args.out, args.json) == (
        "blurry", ["dalle", "diffusion"], Path("out"), True
    )  # fmt: skip
    assert callable(args.func)


def test_the_old_option_names_are_still_read_and_left_out_of_help(capsys):
    for command in (["generate", "p"], ["refine", "0123456789abcdef" * 2, "--prompt", "p"], ["jobs", "submit", "p"]):
        args = parse([*command, "--steps", "7", "--guidance", "2.5"])
        assert (args.num_inference_steps, args.guidance_scale) == (7, 2.5)
        with pytest.raises(SystemExit):
            parse([*command, "--help"])
        shown = capsys.readouterr().out
        assert "--num-inference-steps" in shown and "--guidance-scale" in shown
        assert "--steps" not in shown and "--guidance " not in shown


def test_diffuse_is_the_old_name_of_refine_and_left_out_of_help(capsys):
    old, new = (parse([name, "pick.png", "--prompt", "p", "--skip-rate", "0.3"]) for name in ("diffuse", "refine"))
    assert old.func is new.func and (old.image, old.prompt, old.skip_rate) == (new.image, new.prompt, new.skip_rate)
    with pytest.raises(SystemExit):
        parse(["--help"])
    shown = capsys.readouterr().out
    assert "refine" in shown and "diffuse" not in shown


def test_defaults_come_from_the_schema():
    args = parse(["refine", "0123456789abcdef" * 2, "--prompt", "p"])
    defaults = (args.num_images, args.num_inference_steps, args.guidance_scale, args.skip_rate, args.seed)
    assert defaults == (4, None, None, 0.5, None)


def test_refine_needs_a_prompt(capsys):
    with pytest.raises(SystemExit):
        parse(["refine", "pick.png"])
    assert "--prompt" in capsys.readouterr().err


def test_the_table_of_an_answer_names_its_columns_and_lines_them_up(capsys, tmp_path):
    result = Result(answer(["red", "green", "blue"]))
    _save_and_show(result, argparse.Namespace(out=tmp_path, json=False))
    grid_line, header, *rows = capsys.readouterr().out.splitlines()
    assert grid_line.startswith("grid  ") and grid_line.endswith("-grid.png")
    assert header.split() == ["#", "score", "generator", "id", "file"]
    assert len(rows) == 3
    for index, (row, candidate) in enumerate(zip(rows, result)):
        assert row.split()[:4] == [str(index), f"{candidate.clip_score:.3f}", candidate.generator, candidate.id]
        # Each value sits under its heading: right-aligned numbers end where theirs end,
        # the rest start where theirs start.
        for heading, value in zip(["#", "score"], row.split()):
            assert row.index(value) + len(value) == header.index(heading) + len(heading)
        for heading, value in zip(["generator", "id", "file"], row.split()[2:]):
            assert row.index(value) == header.index(heading), heading
        assert Path(row.split()[-1]).is_file()


def test_errors_are_reported_as_one_line_and_exit_status_1(capsys, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    assert main(["generate", "a red circle", "--url", url, "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: no answer to POST /v1/generate")
    assert main(["upscale", str(tmp_path / "missing.png"), "--url", url]) == 1
    assert "neither an image id" in capsys.readouterr().err


def test_module_runs_and_imports_nothing_heavy():
    code = (
        "import sys, runpy; sys.argv = ['dalleflow_client', '--help']\n"
        "try: runpy.run_module('dalleflow_client', run_name='__main__')\n"
        "except SystemExit as exit: assert exit.code == 0\n"
        "heavy = {name for name in sys.modules if name.split('.')[0] in ('torch', 'ray', 'dalleflow')}\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "generate" in done.stdout and "refine" in done.stdout and "upscale" in done.stdout
