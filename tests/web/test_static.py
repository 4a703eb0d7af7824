"""The page's and the docs' files as the app serves them, in-process (no Ray, no browser): every
module the page imports is there with a JavaScript type, the docs load nothing from another
host, and the API's schema stays the API's alone."""

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from dalleflow.service.http import create_app
from dalleflow.web import STATIC_DIR

REPO = Path(__file__).resolve().parents[2]


def test_the_page_and_every_module_it_imports_are_served():
    client = TestClient(create_app(), base_url="http://127.0.0.1")
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
    paths = TestClient(create_app(), base_url="http://127.0.0.1").get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path == "/" or path.startswith("/static")]
    assert "/v1/generate" in paths


# Every URL a docs page loads: attributes and the spec-url ReDoc reads, plus any
# absolute URL anywhere in the page (an inline script could fetch one).
REFERENCED = re.compile(r'(?:src|href|spec-url)="([^"]+)"')
ABSOLUTE = re.compile(r"(?:https?:)?//[\w.-]+\.\w+", re.IGNORECASE)
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".ico": "image/x-icon", ".json": "application/json"}


@pytest.mark.parametrize("docs", ["/docs", "/redoc", "/docs/oauth2-redirect"])
def test_the_docs_load_nothing_from_other_hosts_and_every_asset_is_served(docs):
    client = TestClient(create_app(), base_url="http://127.0.0.1")
    page = client.get(docs)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert not ABSOLUTE.findall(page.text), f"{docs} names another host"
    for url in REFERENCED.findall(page.text):
        assert url.startswith("/"), f"{docs} loads {url}, not from this app"
        served = client.get(url)
        assert served.status_code == 200, url
        expected = CONTENT_TYPES[Path(url).suffix]
        assert served.headers["content-type"].startswith(expected), (url, served.headers["content-type"])


def test_the_docs_assets_follow_the_route_prefix():
    # Serve mounts the app under its route_prefix and says so in root_path.
    client = TestClient(create_app(), base_url="http://127.0.0.1", root_path="/dalleflow")
    for docs in ["/docs", "/redoc"]:
        urls = REFERENCED.findall(client.get(docs).text)
        assert urls and all(url.startswith("/dalleflow/") for url in urls), urls


def test_the_favicon_is_the_one_its_script_draws(tmp_path):
    served = TestClient(create_app(), base_url="http://127.0.0.1").get("/favicon.ico")
    assert served.status_code == 200 and served.headers["content-type"] == "image/x-icon"
    made = tmp_path / "favicon.ico"
    subprocess.run([sys.executable, "scripts/make_favicon.py", str(made)], cwd=REPO, check=True)
    with Image.open(io.BytesIO(served.content)) as shipped, Image.open(made) as drawn:
        assert shipped.ico.sizes() == drawn.ico.sizes() == {(16, 16), (32, 32), (48, 48)}
        for size in drawn.ico.sizes():
            assert shipped.ico.getimage(size).tobytes() == drawn.ico.getimage(size).tobytes(), size
