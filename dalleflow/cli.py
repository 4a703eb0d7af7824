"""The dalleflow command line.

    dalleflow serve                      # the embedded default at http://127.0.0.1:8000
    dalleflow generate "a red circle on the left on a white background"
    dalleflow refine IMAGE_ID --prompt "..." --skip-rate 0.5
    dalleflow upscale IMAGE_ID --out final.png
    dalleflow interactive "..."          # generate -> pick -> refine -> upscale, asked in the terminal
    dalleflow train diffusion|ranker|vqgan|dalle|upscaler ...  # reproduce the embedded weights

generate, refine, upscale, jobs and interactive are the client's commands (dalleflow_client.cli).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from dalleflow_client.cli import add_client_commands

from dalleflow.service.limits import LOOPBACK_NAMES
from dalleflow.service.proxy_limits import with_proxy_limits
from dalleflow.service.retention import Retention, prune, usage

PR_SET_PDEATHSIG = 1  # linux/prctl.h
ALL_INTERFACES = ("0.0.0.0", "::")  # bind addresses, not names a client can ask for

# Package data, so an installed (not editable) dalleflow finds it wherever it runs from.
DEFAULT_CONFIG = Path(__file__).resolve().parent / "serve_config.yaml"


def is_ready(url: str) -> bool:
    """Whether the server at url answers /readyz: every stage has loaded."""
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _die_with_parent() -> None:
    """In the child, before it runs: the kernel sends it SIGTERM when we die, by any signal, even
    SIGKILL, which no handler of ours sees. `serve run` then exits and its Ray dies with it
    (Ray ties the processes of a cluster it starts to its driver)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _config_for(args: argparse.Namespace) -> tuple[Path, dict]:
    """The config `serve run` is given: the file itself, or, with --host or --port, a copy with them
    that lives only while it serves (one per port, so one killed before it could delete its copy
    leaves one file that the next run on that port replaces)."""
    path = Path(args.config)
    config = yaml.safe_load(path.read_text())
    http = config.setdefault("http_options", {})
    if args.host is None and args.port is None:
        return path, config
    http["host"] = args.host or http.get("host", "127.0.0.1")
    http["port"] = args.port or http.get("port", 8000)
    if args.host and args.host not in ALL_INTERFACES:
        for app in config.get("applications", []):  # a keyless server answers to the name it binds
            limits = app.setdefault("args", {}).setdefault("http_limits", {})
            limits["allowed_hosts"] = [*limits.get("allowed_hosts", LOOPBACK_NAMES), args.host]
    folder = Path(tempfile.gettempdir()) / f"dalleflow-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    written = folder / f"serve-{http['port']}.yaml"
    written.write_text(yaml.safe_dump(config))
    return written, config


def _serve(args: argparse.Namespace) -> int:
    """Run Ray's own `serve run` on the config, and say where to open it once every stage has loaded."""
    config_path, config = _config_for(args)
    http = config["http_options"]
    host = http.get("host", "127.0.0.1")
    url = f"http://{'127.0.0.1' if host in ALL_INTERFACES else host}:{http.get('port', 8000)}"
    environment = with_proxy_limits({"RAY_USAGE_STATS_ENABLED": "0", **os.environ})
    if environment.get("RAY_AUTH_MODE", "").lower() == "disabled":
        print("dalleflow: RAY_AUTH_MODE=disabled: Ray's own ports, which listen on every interface, take "
              "anyone's calls; unset it to keep Ray's token authentication", file=sys.stderr)  # fmt: skip
    serve_command = [str(Path(sys.executable).parent / "serve"), "run", str(config_path)]
    # `serve run` shuts Serve and its Ray down on SIGINT (Ctrl-C reaches both of us). Started
    # with SIGINT ignored (`nohup ... &`), we would pass that on to it: a handler is not inherited.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    server = subprocess.Popen(serve_command, env=environment, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    # A service manager or `kill` stops us with SIGTERM: pass it on as the Ctrl-C it means.
    signal.signal(signal.SIGTERM, lambda *_: server.send_signal(signal.SIGINT))
    is_copy = config_path != Path(args.config)
    try:
        while server.poll() is None:
            if is_ready(url):
                if is_copy:
                    config_path.unlink(missing_ok=True)  # read long ago
                print(f"\n{'=' * 72}\n  dalleflow is serving: open {url}\n  (the API's schema is at {url}/docs; "
                      f"Ctrl-C stops it)\n{'=' * 72}\n", flush=True)  # fmt: skip
                break
            time.sleep(1)
        code = server.wait()
    except KeyboardInterrupt:
        server.send_signal(signal.SIGINT)
        code = server.wait()
    finally:
        if is_copy:
            config_path.unlink(missing_ok=True)
    print("dalleflow stopped." if code == 0 else f"dalleflow: serve run ended with exit code {code}", flush=True)
    return code


TRAINERS = {
    "diffusion": "dalleflow.train.diffusion",
    "ranker": "dalleflow.train.ranker",
    "vqgan": "dalleflow.train.vqgan",
    "dalle": "dalleflow.train.dalle",
    "upscaler": "dalleflow.train.upscaler",
}


# Packages only training imports, in the `train` extra, so a server installs without them.
TRAIN_EXTRA = {"optax"}


def _train(args: argparse.Namespace) -> int:
    import importlib

    try:
        trainer = importlib.import_module(TRAINERS[args.model])
    except ModuleNotFoundError as missing:
        if missing.name not in TRAIN_EXTRA:
            raise
        print(f"error: dalleflow train {args.model} needs {missing.name}, from the training extra: "
              f"pip install 'dalleflow[train]' (or, in a checkout, pip install -e '.[train]')", file=sys.stderr)  # fmt: skip
        return 1
    trainer.main(args.rest)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dalleflow", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve a config (default: the embedded models on this CPU)")
    serve.add_argument("--config", default=str(DEFAULT_CONFIG), help="a Ray Serve config (default: %(default)s)")
    serve.add_argument("--host", help="override http_options.host")
    serve.add_argument("--port", type=int, help="override http_options.port")
    serve.set_defaults(func=_serve)

    train = commands.add_parser("train", help="train an embedded model; `dalleflow train diffusion --help` for options")
    train.add_argument("model", choices=list(TRAINERS))
    train.add_argument("rest", nargs=argparse.REMAINDER, help="options of that trainer")
    train.set_defaults(func=_train)

    store = commands.add_parser("store", help="how much the image store holds; with --prune, prune it to the retention")
    store.add_argument("--path", help="the store folder (default: $DALLEFLOW_STORE or ~/.local/share/dalleflow/images)")
    store.add_argument("--prune", action="store_true", help="remove what the retention below lets go")
    store.add_argument("--max-age-days", type=float, default=Retention().max_age_days, help="default: %(default)s")
    store.add_argument("--max-total-mb", type=float, default=Retention().max_total_mb, help="default: %(default)s")
    store.set_defaults(func=_store)

    add_client_commands(commands)
    return parser


def _store(args: argparse.Namespace) -> int:
    from dalleflow.service.store import default_store_path

    root = Path(args.path) if args.path else default_store_path()
    if not root.is_dir():
        print(f"error: no store at {root}", file=sys.stderr)
        return 1
    if args.prune:
        pruned = prune(root, Retention(max_age_days=args.max_age_days, max_total_mb=args.max_total_mb))
        print(f"removed {pruned.files} files, {pruned.bytes / 2**20:.1f} MB")
    held = usage(root)
    oldest = f"{held.oldest_s / 86400:.1f} days" if held.oldest_s is not None else "-"
    print(f"{root}: {held.files} files, {held.bytes / 2**20:.1f} MB, oldest {oldest}, "
          f"{held.kept_for_live_jobs} kept for queued or running jobs")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
