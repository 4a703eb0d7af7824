"""The page's files as the app serves them, in-process (no Ray, no browser): every module it
imports is there with a JavaScript type, and the API's schema stays the API's alone."""

import re

from fastapi.testclient import TestClient

from dalleflow.service.http import create_app
from dalleflow.web import STATIC_DIR


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
