"""The web page end to end: Debian's Chromium, headless, driven by playwright, against the real service.

    .venv/bin/python -m pytest -q tests/web

Each step leaves a screenshot in $DALLEFLOW_ARTIFACTS/web/<test> (or the test's tmp
folder); with DALLEFLOW_UPDATE_DOCS=1 the final full page is also copied to
docs/web-page.png, which the README shows (a plain test run changes no tracked file).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

REPO = Path(__file__).resolve().parents[2]
PROMPT = "a red circle on the left on a white background"
# Ray Serve on a busy 2-core CPU: a request can take a while, never minutes.
WAIT_MS = 180_000
expect.set_options(timeout=WAIT_MS)  # expect's own default is 5 s, whatever the page's is


class Screenshots:
    """Numbered screenshots, one per step, kept as test artefacts."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.count = 0

    def take(self, page: Page, step: str, full_page: bool = False) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{step}.png"
        page.screenshot(path=path, full_page=full_page)
        return path


@pytest.fixture
def page(browser, server_url) -> Page:
    """The page, freshly opened in its own browser context (so its own sessionStorage)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    script_errors: list = []
    page.on("pageerror", lambda error: script_errors.append(error))
    not_found: list = []
    page.on("response", lambda response: response.status == 404 and not_found.append(response.url))
    page.goto(server_url + "/")
    yield page
    context.close()
    assert not script_errors, f"the page's scripts raised: {script_errors}"
    assert not not_found, f"the page asked for what is not there: {not_found}"


@pytest.fixture
def shots(request, tmp_path) -> Screenshots:
    root = os.environ.get("DALLEFLOW_ARTIFACTS")
    folder = Path(root) / "web" / request.node.name if root else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return Screenshots(folder)


def wait_until_loaded(page: Page, selector: str) -> None:
    page.wait_for_function(
        "selector => [...document.querySelectorAll(selector)].every(image => image.complete && image.naturalWidth > 0)",
        arg=selector,
    )


# Records, in order, each step text a progress row shows and the first grid card: a
# MutationObserver runs after every change, however fast the service answers.
RECORD_WHAT_APPEARS_FIRST = """() => {
  window.appeared = [];
  new MutationObserver(() => {
    for (const count of document.querySelectorAll("#progress-steps .step-count")) {
      const text = count.textContent;
      if (text.startsWith("step ") && !window.appeared.includes(text)) window.appeared.push(text);
    }
    if (document.querySelector("#candidates .card") && !window.appeared.includes("grid")) window.appeared.push("grid");
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
}"""


def card_ids(cards) -> list[str]:
    return cards.evaluate_all("cards => cards.map(card => card.dataset.id)")


def test_generate_pick_refine_upscale_download(page, shots):
    expect(page.get_by_role("heading", name="dalleflow")).to_be_visible()
    shots.take(page, "opened")

    page.get_by_label("Prompt", exact=True).fill(PROMPT)
    page.get_by_label("Images per generator").fill("2")
    page.get_by_label("Steps").fill("20")
    page.get_by_label("Seed").fill("5")
    page.evaluate(RECORD_WHAT_APPEARS_FIRST)
    page.get_by_role("button", name="Generate").click()
    progress = page.get_by_role("status")
    expect(progress).to_be_visible()
    expect(progress).to_contain_text("Generating")
    shots.take(page, "generating")

    # 2 images per generator, the two generators' ranked in one grid.
    candidates = page.locator("#candidates .card")
    expect(candidates).to_have_count(4)
    expect(progress).to_be_hidden()
    # The stream's progress was on the page, a row per generator, step by step with a
    # preview (DALL·E's steps are eighths of its image tokens), before the grid.
    appeared = page.evaluate("window.appeared")
    # Steps shown in one burst are recorded once, as the last of them; on a loaded
    # machine all eight of DALL·E's can arrive in one read of the stream and leave
    # only "done" (the HTTP streaming tests count every step), so the page must show
    # steps before the grid, not each generator's.
    assert appeared[-1] == "grid" and all(re.fullmatch(r"step \d+/(20|8)", text) for text in appeared[:-1]), appeared
    assert len(appeared) > 1, appeared
    for generator in ("diffusion", "dalle"):
        row = page.locator(f'#progress-steps li[data-generator="{generator}"]')
        assert row.locator(".step-count").text_content() == "done: 2 images"
        assert row.locator(".step-preview").get_attribute("src").startswith("data:image/png;base64,")
    expect(candidates.locator(".rank")).to_have_text(["#0", "#1", "#2", "#3"])
    shown = candidates.locator(".generator").all_text_contents()
    assert sorted(shown) == ["dalle", "dalle", "diffusion", "diffusion"], shown
    expect(candidates.locator(".score")).to_have_text([re.compile(r"^CLIP -?\d+\.\d\d$")] * 4)
    wait_until_loaded(page, "#candidates img")
    first = candidates.nth(0).locator("img")
    assert first.evaluate("image => [image.naturalWidth, getComputedStyle(image).imageRendering]") == [32, "pixelated"]
    assert first.bounding_box()["width"] >= 4 * 32  # shown scaled up
    candidate_ids = card_ids(candidates)
    shots.take(page, "candidates")

    # Pick index 1: the second-ranked, as a person would who disagrees with the ranker.
    candidates.nth(1).click()
    expect(candidates.nth(1)).to_have_attribute("aria-pressed", "true")
    expect(candidates.nth(0)).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#pick-download")).to_have_attribute("href", f"v1/images/{candidate_ids[1]}")
    shots.take(page, "picked")

    page.locator("#skip-rate").fill("0.6")
    expect(page.locator("#skip-rate-value")).to_have_text("0.60")
    page.get_by_label("Number of variations").fill("2")
    page.get_by_role("button", name="Refine", exact=True).click()
    variations = page.locator("#variations .card")
    expect(variations).to_have_count(2)
    expect(variations.locator(".rank")).to_have_text(["#0", "#1"])
    expect(variations.locator(".generator")).to_have_text(["refiner", "refiner"])
    expect(page.locator("#variations-summary")).to_contain_text("skip rate 0.6")
    variation_ids = card_ids(variations)
    wait_until_loaded(page, "#variations img")
    shots.take(page, "variations")

    variations.nth(1).click()
    expect(variations.nth(1)).to_have_attribute("aria-pressed", "true")
    expect(candidates.nth(1)).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#pick-download")).to_have_attribute("href", f"v1/images/{variation_ids[1]}")
    shots.take(page, "variation-picked")

    page.get_by_role("button", name="Upscale ×4", exact=True).click()
    upscaled = page.locator("#upscaled-image")
    expect(upscaled).to_be_visible()
    wait_until_loaded(page, "#upscaled-image")
    assert upscaled.evaluate("image => [image.naturalWidth, image.naturalHeight]") == [128, 128]
    # Shown at the pick's scale (×4 the pick), scaled down only to fit the panel and the window.
    pick_width = page.locator("#pick-image").bounding_box()["width"]
    room = page.locator("#upscaled-section").evaluate(
        "section => { const style = getComputedStyle(section);"
        " return section.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight); }")
    for height in (1400, 500, 900):
        page.set_viewport_size({"width": 1280, "height": height})
        box = upscaled.bounding_box()
        assert box["width"] == pytest.approx(min(4 * pick_width, room, height - 32), abs=1), height
        assert box["height"] == pytest.approx(box["width"], abs=1)
    upscaled_id = page.locator("#upscaled-download").get_attribute("href").removeprefix("v1/images/")
    shots.take(page, "upscaled")

    # The pick's download is the stored PNG: pixels and metadata.
    with page.expect_download() as pick_download:
        page.get_by_role("link", name="Download", exact=True).click()
    assert pick_download.value.suggested_filename.endswith(".png")
    pick_path = shots.folder / "download-pick.png"
    pick_download.value.save_as(pick_path)
    with Image.open(pick_path) as image:
        assert image.format == "PNG" and image.size == (32, 32)
        assert image.text["prompt"] == PROMPT
        assert json.loads(image.text["dalleflow"])["id"] == variation_ids[1]

    with page.expect_download() as upscaled_download:
        page.get_by_role("link", name="Download the upscaled image").click()
    upscaled_path = shots.folder / "download-upscaled.png"
    upscaled_download.value.save_as(upscaled_path)
    with Image.open(upscaled_path) as image:
        assert image.format == "PNG" and image.size == (128, 128)
        assert json.loads(image.text["dalleflow"])["source_id"] == variation_ids[1]

    history = page.locator("#history .thumb")
    expect(history).to_have_count(7)
    assert card_ids(history) == candidate_ids + variation_ids + [upscaled_id]
    wait_until_loaded(page, "#history img")
    expect(history.nth(5)).to_have_attribute("aria-pressed", "true")  # the pick, marked there too
    final = shots.take(page, "full-page", full_page=True)
    if os.environ.get("DALLEFLOW_UPDATE_DOCS") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copyfile(final, REPO / "docs" / "web-page.png")

    # The history is the tab's: it survives a reload, and any image in it can be picked again.
    page.reload()
    expect(history).to_have_count(7)
    history.nth(0).click()
    expect(page.locator("#pick-section")).to_be_visible()
    expect(page.locator("#pick-download")).to_have_attribute("href", f"v1/images/{candidate_ids[0]}")
    wait_until_loaded(page, "#pick-image")
    shots.take(page, "picked-from-history")


def test_an_empty_prompt_shows_the_api_error_naming_the_field(page, shots):
    page.get_by_role("button", name="Generate").click()
    banner = page.get_by_role("alert")
    expect(banner).to_be_visible()
    # The API's own 422 (pydantic's words), not the browser's form validation.
    expect(banner).to_contain_text("422")
    expect(banner).to_contain_text("prompt: String should have at least 1 character")
    expect(page.get_by_label("Prompt", exact=True)).to_have_attribute("aria-invalid", "true")
    shots.take(page, "empty-prompt-error")


TEDDY = "a teddy bear on a skateboard in Times Square"  # dalle-flow's own example


def test_negative_prompt_generator_choice_examples_and_a_warning_for_unknown_words(page, server_url, shots):
    # The embedded world explains itself: prompts to try, and what the models know.
    examples = page.locator("#examples button")
    expect(examples).to_have_count(6)
    page.get_by_text("What the embedded models draw").click()
    expect(page.locator("#world-forms")).to_contain_text("a {colour} {shape} to the left of a {colour} {shape}")
    expect(page.locator("#world-words")).to_contain_text("circle, square, triangle")
    expect(page.locator("#world-checkpoints")).to_contain_text("Configure")
    shots.take(page, "world")

    page.get_by_label("Prompt", exact=True).fill(TEDDY)
    page.get_by_label("Negative prompt").fill("blurry")
    expect(page.get_by_label("dalle", exact=True)).to_be_checked()
    page.get_by_label("diffusion", exact=True).uncheck()
    page.get_by_label("Images per generator").fill("2")
    page.get_by_label("Steps").fill("2")
    page.get_by_role("button", name="Generate").click()
    candidates = page.locator("#candidates .card")
    expect(candidates).to_have_count(2)  # the DALL·E's only
    expect(candidates.locator(".generator")).to_have_text(["dalle", "dalle"])
    warnings = page.get_by_role("note", name="Warnings")
    expect(warnings).to_be_visible()
    expect(warnings).to_contain_text(
        "prompt: the generator 'dalle' does not know 'teddy', 'bear', 'skateboard', 'in', 'times'")
    expect(warnings).to_contain_text("negative_prompt: the generator 'dalle' does not know 'blurry'")
    shots.take(page, "teddy-bear-warned")
    # The negative prompt reached the model: its PNG's parameters say so.
    stored = page.request.get(f"{server_url}/v1/images/{card_ids(candidates)[0]}")
    made = json.loads(Image.open(io.BytesIO(stored.body())).text["dalleflow"])
    assert (made["generator"], made["parameters"]["negative_prompt"]) == ("dalle", "blurry")

    # An example fills the prompt; the world's own words answer without a warning.
    examples.nth(0).click()
    prompt = page.get_by_label("Prompt", exact=True)
    assert prompt.input_value() == examples.nth(0).text_content()
    page.get_by_label("Negative prompt").fill("")
    page.get_by_label("dalle", exact=True).uncheck()
    page.get_by_role("button", name="Generate").click()
    # No generator ticked: the API's 422 names the field, which the page marks.
    expect(page.get_by_role("alert")).to_contain_text("generators: choose at least one")
    expect(page.locator("#generators")).to_have_attribute("aria-invalid", "true")
    page.get_by_label("diffusion", exact=True).check()
    page.get_by_role("button", name="Generate").click()
    expect(candidates.locator(".generator")).to_have_text(["diffusion", "diffusion"])
    expect(warnings).to_be_hidden()
    shots.take(page, "example-generated")
