"""The page's files as the app serves them, in-process (no Ray, no browser): every module it
imports is there with a JavaScript type, its icon is the one its script draws, and the API's
schema stays the API's alone."""

import io
import re
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from dalleflow.service.http import create_app
from dalleflow.web import STATIC_DIR

REPO = Path(__file__).resolve().parents[2]


def test_the_page_and_every_module_it_imports_are_served():
    client = TestClient(create_app())
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="static/app.js"' in page.text and 'href="static/style.css"' in page.text
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    for module in STATIC_DIR.glob("*.js"):
        served = client.get(f"/static/{module.name}")
        assert served.status_code == 200 and served.headers["content-type"].startswith("text/javascript")
        for imported in re.findall(r'from "\./([\w.]+)"', module.read_text()):
            assert (STATIC_DIR / imported).is_file(), f"{module.name} imports a missing {imported}"


def test_the_page_stays_out_of_the_api_schema():
    paths = TestClient(create_app()).get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path == "/" or path.startswith("/static")]
    assert "/v1/generate" in paths


def test_the_favicon_is_the_one_its_script_draws(tmp_path):
    served = TestClient(create_app()).get("/favicon.ico")
    assert served.status_code == 200 and served.headers["content-type"] == "image/x-icon"
    made = tmp_path / "favicon.ico"
    subprocess.run([sys.executable, "scripts/make_favicon.py", str(made)], cwd=REPO, check=True)
    with Image.open(io.BytesIO(served.content)) as shipped, Image.open(made) as drawn:
        assert shipped.ico.sizes() == drawn.ico.sizes() == {(16, 16), (32, 32), (48, 48)}
        for size in drawn.ico.sizes():
            assert shipped.ico.getimage(size).tobytes() == drawn.ico.getimage(size).tobytes(), size
