// Rendering only: ranked grids, the history strip, the progress view. No requests here.

import { imageUrl, pngDataUrl } from "./api.js";

const byId = (id) => document.getElementById(id);

// An image record as the page keeps it: what the API answered, plus where it came from.
//   {id, prompt, kind: "candidate" | "variation" | "upscaled", generator, rank, clip_score, src?}
// src is the answer's own data URL when there is one; otherwise the stored PNG by id.
export const sourceOf = (entry) => entry.src || imageUrl(entry.id);

export function describe(entry) {
  if (entry.kind === "upscaled") return `upscaled ×4 of “${entry.prompt}”`;
  const score = entry.clip_score == null ? "" : `, CLIP score ${entry.clip_score.toFixed(2)}`;
  const flagged = entry.flagged ? ", blacked out by the model's safety checker" : "";
  return `rank ${entry.rank} by ${entry.generator}${score}${flagged}, “${entry.prompt}”`;
}

function card(entry, index, onPick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "card";
  button.dataset.index = index;
  button.dataset.id = entry.id;
  button.setAttribute("aria-pressed", "false");
  button.setAttribute("aria-label", `Pick ${describe(entry)}`);
  button.addEventListener("click", () => onPick(entry));

  const image = document.createElement("img");
  image.className = "pixelated";
  image.src = sourceOf(entry);
  image.alt = "";
  const meta = document.createElement("span");
  meta.className = "card-meta";
  meta.innerHTML = '<span class="rank"></span><span class="generator"></span><span class="score"></span>';
  meta.querySelector(".rank").textContent = `#${entry.rank}`;
  meta.querySelector(".generator").textContent = entry.generator;
  meta.querySelector(".score").textContent = `CLIP ${entry.clip_score.toFixed(2)}`;
  button.append(image, meta);
  if (entry.flagged) {
    const note = document.createElement("span");
    note.className = "flagged";
    note.textContent = "blacked out by the model's safety checker";
    button.append(note);
  }

  const item = document.createElement("li");
  item.append(button);
  return item;
}

export function renderGrid(listId, entries, onPick) {
  byId(listId).replaceChildren(...entries.map((entry, index) => card(entry, index, onPick)));
}

export function renderHistory(entries, onPick) {
  byId("history-empty").hidden = entries.length > 0;
  byId("history").replaceChildren(
    ...entries.map((entry) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "thumb";
      button.dataset.id = entry.id;
      button.setAttribute("aria-pressed", "false");
      button.setAttribute("aria-label", `Pick ${describe(entry)}`);
      button.title = describe(entry);
      button.addEventListener("click", () => onPick(entry));
      const image = document.createElement("img");
      image.className = "pixelated";
      image.src = imageUrl(entry.id); // the stored PNG: history outlives the answers
      image.alt = "";
      button.append(image);
      const item = document.createElement("li");
      item.append(button);
      return item;
    }),
  );
}

// Marks the pick wherever it appears: in a grid, in the history.
export function markPicked(id) {
  for (const element of document.querySelectorAll("[data-id]")) {
    element.setAttribute("aria-pressed", String(element.dataset.id === id));
  }
}

// Shows the progress view until the returned function is called: the elapsed time, and
// a row per generator fed by the stream's events (showStep, showGenerated).
export function startProgress(label) {
  const started = performance.now();
  const tick = () => {
    byId("elapsed").textContent = ((performance.now() - started) / 1000).toFixed(1);
  };
  byId("progress-label").textContent = label;
  byId("progress-steps").replaceChildren();
  tick();
  byId("progress").hidden = false;
  const timer = setInterval(tick, 100);
  return () => {
    clearInterval(timer);
    byId("progress").hidden = true;
  };
}

function stepRow(generator) {
  const list = byId("progress-steps");
  let row = list.querySelector(`[data-generator="${CSS.escape(generator)}"]`);
  if (row) return row;
  row = document.createElement("li");
  row.dataset.generator = generator;
  row.innerHTML =
    '<span class="step-name"></span><progress></progress><span class="step-count"></span><img class="pixelated step-preview" alt="">';
  row.querySelector(".step-name").textContent = generator;
  row.querySelector("progress").setAttribute("aria-label", `${generator} progress`);
  row.querySelector(".step-preview").hidden = true;
  list.append(row);
  return row;
}

// One model step: {generator, step, step_count, preview (a small base64 PNG, or null)}.
export function showStep(event) {
  const row = stepRow(event.generator);
  const bar = row.querySelector("progress");
  bar.max = event.step_count;
  bar.value = event.step;
  row.querySelector(".step-count").textContent = `step ${event.step}/${event.step_count}`;
  if (event.preview) {
    const preview = row.querySelector(".step-preview");
    preview.src = pngDataUrl(event.preview);
    preview.alt = `${event.generator}, step ${event.step}`;
    preview.hidden = false;
  }
}

// A generator is done: {generator, report: {status, count, error}}.
export function showGenerated(event) {
  const { status, count, error } = event.report;
  const row = stepRow(event.generator);
  row.dataset.status = status;
  row.querySelector(".step-count").textContent = status === "ok" ? `done: ${count} images` : `${status}: ${error}`;
}

export function showError(message) {
  byId("error-text").textContent = message;
  byId("error-banner").hidden = false;
}

export function clearError() {
  byId("error-banner").hidden = true;
  byId("error-text").textContent = "";
  for (const field of document.querySelectorAll("[aria-invalid]")) field.removeAttribute("aria-invalid");
}

// An answer's warnings (words its models do not know...), or nothing when it has none.
export function renderWarnings(listId, warnings) {
  const list = byId(listId);
  list.replaceChildren(
    ...(warnings || []).map((warning) => {
      const item = document.createElement("li");
      item.textContent = warning;
      return item;
    }),
  );
  list.hidden = !list.children.length;
}

// A checkbox per generator, all checked: the request names them only when some are left out.
export function renderGenerators(names) {
  const fieldset = byId("generators");
  fieldset.replaceChildren(fieldset.querySelector("legend") || document.createElement("legend"));
  for (const name of names) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.name = "generator";
    box.value = name;
    box.checked = true;
    label.append(box, ` ${name}`);
    fieldset.append(label);
  }
  fieldset.hidden = names.length < 2; // one generator is no choice
}

// What the embedded world is: its example prompts (a click fills the prompt box), its
// caption forms and words, and where to go for models that draw anything.
export function renderWorld(world, onExample) {
  const section = byId("world");
  if (!world) {
    section.hidden = true;
    return;
  }
  byId("examples").replaceChildren(
    ...world.example_prompts.map((prompt) => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = prompt;
      button.addEventListener("click", () => onExample(prompt));
      const item = document.createElement("li");
      item.append(button);
      return item;
    }),
  );
  byId("world-summary").textContent = world.summary;
  byId("world-forms").replaceChildren(
    ...world.caption_forms.map((form) => {
      const item = document.createElement("li");
      item.textContent = form;
      return item;
    }),
  );
  byId("world-words").replaceChildren(
    ...Object.entries(world.words).flatMap(([kind, words]) => {
      const term = document.createElement("dt");
      term.textContent = kind;
      const definition = document.createElement("dd");
      definition.textContent = words.join(", ");
      return [term, definition];
    }),
  );
  byId("world-checkpoints").textContent = world.real_checkpoints;
  section.hidden = false;
}
