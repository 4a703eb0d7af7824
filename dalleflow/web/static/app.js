// The page's state and handlers: generate -> pick -> refine or upscale -> download.

import * as api from "./api.js";
import { addToHistory, loadHistory } from "./history.js";
import {
  clearError, describe, markPicked, renderGenerators, renderGrid, renderHistory, renderWarnings, renderWorld, showError,
  showGenerated, showStep, sourceOf, startProgress,
} from "./views.js";

const byId = (id) => document.getElementById(id);
const generateForm = byId("generate-form");
const refineForm = byId("refine-form");

let pick = null; // the image record that Refine and Upscale work on
let isBusy = false;

// An empty box is left out of the request, so the API's default applies (a random
// seed, 20 steps...); anything typed goes as it is, for the API to judge.
function numberOf(input) {
  return input.value.trim() === "" ? undefined : Number(input.value);
}

function sampling() {
  const fields = generateForm.elements;
  return {
    seed: numberOf(fields.seed),
    num_inference_steps: numberOf(fields.num_inference_steps),
    guidance_scale: numberOf(fields.guidance_scale),
    negative_prompt: fields.negative_prompt.value.trim() || undefined,
  };
}

// The generators to ask: undefined (every enabled one) while all are ticked, else those ticked.
function chosenGenerators() {
  const boxes = [...generateForm.querySelectorAll('input[name="generator"]')];
  const ticked = boxes.filter((box) => box.checked).map((box) => box.value);
  return ticked.length === boxes.length ? undefined : ticked;
}

function record(candidate, prompt, kind) {
  const { id, generator, rank, clip_score, image, nsfw_content_detected } = candidate;
  return { id, prompt, kind, generator, rank, clip_score, flagged: Boolean(nsfw_content_detected), src: api.pngDataUrl(image) };
}

function summary(answer) {
  const reports = Object.entries(answer.generators).map(([name, report]) =>
    report.status === "ok"
      ? `${name}: ${report.count} in ${report.seconds.toFixed(1)} s`
      : `⚠ ${name} ${report.status}: ${report.error}`,
  );
  return [`seed ${answer.seed}`, ...reports, `total ${answer.timings.total.toFixed(1)} s`].join(" · ");
}

function remember(entries) {
  // The data URLs are left out: sessionStorage is small, and the store has every image.
  const history = addToHistory(entries.map(({ src, ...rest }) => rest));
  renderHistory(history, setPick);
  markPicked(pick && pick.id);
}

// The live view of a streamed request: a progress row per generator, with its preview.
function showEvent(event) {
  if (event.type === "progress") showStep(event);
  else if (event.type === "generated") showGenerated(event);
}

function setPick(entry) {
  pick = entry;
  const image = byId("pick-image");
  image.src = sourceOf(entry);
  image.alt = `Your pick: ${describe(entry)}`;
  byId("pick-meta").textContent = describe(entry);
  setDownload(byId("pick-download"), entry);
  byId("pick-section").hidden = false;
  markPicked(entry.id);
}

function setDownload(link, entry) {
  link.href = api.imageUrl(entry.id); // the stored PNG, which carries the metadata
  link.download = `dalleflow-${entry.kind}-${entry.id.slice(0, 8)}.png`;
}

// Runs one request with the progress view up and the buttons off; an API error goes
// to the banner, and the field it names (looked up in `forms`) is marked invalid.
async function run(label, forms, task) {
  if (isBusy) return;
  isBusy = true;
  clearError();
  const buttons = ["generate", "refine", "upscale"].map(byId);
  for (const button of buttons) button.disabled = true;
  const stop = startProgress(label);
  try {
    await task();
  } catch (error) {
    showError(error.message);
    const input = error.field && forms.map((form) => form.elements.namedItem(error.field)).find(Boolean);
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  } finally {
    stop();
    for (const button of buttons) button.disabled = false;
    isBusy = false;
  }
}

generateForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const fields = generateForm.elements;
  const body = {
    prompt: fields.prompt.value, num_images: numberOf(fields.num_images), generators: chosenGenerators(), ...sampling(),
  };
  run("Generating", [generateForm], async () => {
    const answer = await api.generate(body, showEvent);
    const entries = answer.candidates.map((candidate) => record(candidate, answer.prompt, "candidate"));
    // A new grid starts a new round: the old pick and its variations stay in the history.
    pick = null;
    byId("pick-section").hidden = true;
    byId("variations-section").hidden = true;
    renderGrid("candidates", entries, setPick);
    renderWarnings("candidates-warnings", answer.warnings);
    byId("candidates-summary").textContent = summary(answer);
    byId("candidates-section").hidden = false;
    remember(entries);
  });
});

refineForm.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!pick) return;
  const source = pick;
  const fields = refineForm.elements;
  const body = {
    image_id: source.id, prompt: source.prompt,
    skip_rate: Number(fields.skip_rate.value), num_images: numberOf(fields.num_images), ...sampling(),
  };
  run("Refining", [refineForm, generateForm], async () => {
    const answer = await api.refine(body, showEvent);
    const entries = answer.candidates.map((candidate) => record(candidate, answer.prompt, "variation"));
    renderGrid("variations", entries, setPick);
    renderWarnings("variations-warnings", answer.warnings);
    byId("variations-summary").textContent = `skip rate ${body.skip_rate} · ${summary(answer)}`;
    byId("variations-section").hidden = false;
    remember(entries);
  });
});

byId("upscale").addEventListener("click", () => {
  if (!pick) return;
  const source = pick;
  run("Upscaling", [], async () => {
    const answer = await api.upscale({ image_id: source.id });
    const entry = {
      id: answer.id, prompt: source.prompt, kind: "upscaled",
      generator: "upscaler", rank: null, clip_score: null, src: api.pngDataUrl(answer.image),
    };
    const image = byId("upscaled-image");
    // At the pick's own scale, so it shows as large as the upscaler made it (×4 the pick);
    // the stylesheet scales it down only to fit the window.
    const shown = byId("pick-image");
    const scale = shown.naturalWidth ? shown.clientWidth / shown.naturalWidth : 1;
    image.style.setProperty("--shown-width", `${answer.width * scale}px`);
    image.style.setProperty("--aspect", answer.width / answer.height);
    image.src = entry.src;
    image.alt = `Upscaled ×4 (${answer.width}×${answer.height}): ${describe(source)}`;
    setDownload(byId("upscaled-download"), entry);
    byId("upscaled-section").hidden = false;
    remember([entry]);
  });
});

byId("skip-rate").addEventListener("input", (event) => {
  byId("skip-rate-value").textContent = Number(event.target.value).toFixed(2);
});
byId("error-close").addEventListener("click", clearError);
// Enter writes a new line in the prompt box; Ctrl+Enter (or Cmd+Enter) generates.
byId("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) generateForm.requestSubmit();
});

renderHistory(loadHistory(), setPick);

// The generators to choose from and, with the embedded models, what they draw. The page works
// without them (every generator is asked), so a failure here is shown and no more.
api.models().then(
  (answer) => {
    renderGenerators(answer.models.filter((model) => model.stage.startsWith("generator:")).map((model) => model.name));
    renderWorld(answer.world, (prompt) => {
      byId("prompt").value = prompt;
      byId("prompt").focus();
    });
  },
  (error) => showError(error.message),
);
