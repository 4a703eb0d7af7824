"""The browser every test here drives: Debian's Chromium, headless, through playwright."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

# playwright's own browser download is not reachable here; Debian's chromium is
# (scripts/setup.sh test installs it).
CHROMIUM = os.environ.get("DALLEFLOW_CHROMIUM", "/usr/bin/chromium")


# Per module: playwright's sync API keeps an event loop running while it is open, and
# pytest-asyncio cannot run a test's loop beside it.
@pytest.fixture(scope="module")
def browser() -> Browser:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: `bash scripts/setup.sh test` installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()
