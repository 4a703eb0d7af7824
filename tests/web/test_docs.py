"""The API docs in a browser with no way out: every request to a host other than the app's
is refused and recorded, so /docs and /redoc must render from the app's own files, as on a
machine without internet. The app runs in this process (uvicorn) with an API key on, over
a flow of tiny models, so the docs' Authorize button is tried against a real 401.

    .venv/bin/python -m pytest -q tests/web/test_docs.py
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import keyed_tiny_app, serve_in_thread

KEY = "docs-key"
WAIT_MS = 60_000  # the Swagger UI bundle is 1.5 MB of JavaScript to parse on a busy CPU


@pytest.fixture(scope="module")
def app_url(tiny_diffusion, tiny_clip_folder, tmp_path_factory):
    app = keyed_tiny_app([KEY], tiny_diffusion, tiny_clip_folder[1], tmp_path_factory.mktemp("store"))
    with serve_in_thread(app) as url:
        yield url


class Offline:
    """A browser context that reaches the app and nothing else."""

    def __init__(self, browser, app_url: str):
        self.app_host = urlsplit(app_url).netloc
        self.refused: list[str] = []
        self.not_found: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.page.on("response", lambda response: response.status == 404 and self.not_found.append(response.url))

    def _route(self, route) -> None:
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlsplit(url).netloc == self.app_host:
            route.continue_()
        else:
            self.refused.append(url)
            route.abort()


@pytest.fixture
def offline(browser, app_url):
    offline = Offline(browser, app_url)
    yield offline
    offline.context.close()
    assert not offline.refused, f"the page asked other hosts for {offline.refused}"
    assert not offline.not_found, f"404 for {offline.not_found}"


def test_swagger_ui_renders_offline_and_authorizes_with_the_key(offline, app_url):
    page: Page = offline.page
    page.goto(app_url + "/docs")
    expect(page.get_by_text("/v1/generate", exact=True)).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_text("/v1/models", exact=True)).to_be_visible()

    # Without the key, the API's 401; with it (Authorize), the answer.
    models = page.locator(".opblock-get", has=page.get_by_text("/v1/models", exact=True))
    models.locator(".opblock-summary").click()
    models.get_by_role("button", name="Try it out").click()
    with page.expect_response(lambda response: response.url.endswith("/v1/models")) as unkeyed:
        models.get_by_role("button", name="Execute").click()
    assert unkeyed.value.status == 401

    page.get_by_role("button", name="Authorize").first.click()
    authorizations = page.locator(".modal-ux")  # Swagger UI's modal has no dialog role
    authorizations.get_by_label("Value").fill(KEY)
    authorizations.get_by_role("button", name="Apply credentials").click()
    authorizations.get_by_role("button", name="Close", exact=True).click()
    with page.expect_response(lambda response: response.url.endswith("/v1/models")) as keyed:
        models.get_by_role("button", name="Execute").click()
    assert keyed.value.status == 200
    assert keyed.value.request.headers["authorization"] == f"Bearer {KEY}"


def test_redoc_renders_offline(offline, app_url):
    page: Page = offline.page
    page.goto(app_url + "/redoc")
    # ReDoc's menu lists each operation by its summary, and the operation shows its path.
    expect(page.get_by_role("menuitem").get_by_text("Generate", exact=True)).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_text("/v1/generate", exact=True).first).to_be_attached()


def test_the_page_links_its_api_reference_to_the_local_docs_and_names_its_icon(offline, app_url):
    page: Page = offline.page
    page.goto(app_url + "/")
    # Headless Chromium fetches no icon by itself, so the test asks for the one the page names.
    icon_url = page.evaluate("document.querySelector('link[rel~=icon]')?.href")
    assert icon_url == app_url + "/favicon.ico"
    icon = page.request.get(icon_url)
    assert icon.status == 200 and icon.headers["content-type"] == "image/x-icon"
    link = page.get_by_role("link", name="API reference")
    assert link.evaluate("link => link.href") == app_url + "/docs"
    link.click()
    expect(page.get_by_text("/v1/generate", exact=True)).to_be_visible(timeout=WAIT_MS)
