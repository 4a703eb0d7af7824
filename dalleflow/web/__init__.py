"""The web page for the pick-and-refine loop: plain HTML, CSS and ES modules in static/.

There is no build step: service/http.py serves these files as they are, and the
page talks to the same JSON API under /v1 as every other client.
"""

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
