// The JSON API under /v1 (the same contract as client/dalleflow_client/schemas.py).
// Paths are relative to the page, so a route prefix in front of the app still works.

export class ApiError extends Error {
  constructor(status, message, field = null) {
    super(message);
    this.status = status;
    this.field = field; // the request field the API blamed, when it named one
  }
}

const STATUS_NAMES = {
  401: "API key needed",
  404: "Not found",
  413: "Too large",
  422: "Invalid input",
  429: "Too many requests",
  503: "Service unavailable",
};

// FastAPI answers {detail: "text"} or, for field errors, {detail: [{loc: ["body", field], msg}]}.
function fieldOf(error) {
  const names = (error.loc || []).filter((part) => typeof part === "string" && part !== "body");
  return names.length ? names[names.length - 1] : null;
}

function toApiError(status, body, text) {
  const title = `${STATUS_NAMES[status] || "Error"} (${status})`;
  const detail = body && body.detail;
  if (Array.isArray(detail) && detail.length) {
    const parts = detail.map((error) => (fieldOf(error) ? `${fieldOf(error)}: ${error.msg}` : error.msg));
    return new ApiError(status, `${title}: ${parts.join("; ")}`, fieldOf(detail[0]));
  }
  return new ApiError(status, `${title}: ${typeof detail === "string" ? detail : text || "no details"}`);
}

// A server with API keys on answers 401: the page asks for the key once and keeps it in
// this tab's sessionStorage (gone when the tab closes), sending it as a bearer token.
const KEY_ITEM = "dalleflow-api-key";

function authorization() {
  const key = sessionStorage.getItem(KEY_ITEM);
  return key ? { authorization: `Bearer ${key}` } : {};
}

async function send(path, init) {
  const request = () => fetch(path, { ...init, headers: { ...init.headers, ...authorization() } });
  let response;
  try {
    response = await request();
    if (response.status === 401) {
      const key = window.prompt("This service needs an API key:");
      if (key) {
        sessionStorage.setItem(KEY_ITEM, key.trim());
        response = await request();
      }
    }
  } catch (error) {
    throw new ApiError(0, `Cannot reach the service: ${error.message}`);
  }
  if (response.status === 401) sessionStorage.removeItem(KEY_ITEM); // wrong: ask again next time
  return response;
}

async function post(path, body) {
  return answerOf(await send(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  }));
}

async function get(path) {
  return answerOf(await send(path, { method: "GET", headers: {} }));
}

async function answerOf(response) {
  const text = await response.text();
  let data = null;
  try {
    data = JSON.parse(text);
  } catch {
    // A proxy's HTML error page, say: shown as text below.
  }
  if (!response.ok) throw toApiError(response.status, data, text.slice(0, 300));
  return data;
}

// The same request, answered as a stream (Accept: application/x-ndjson): one JSON event a
// line, {type: "progress" | "generated" | "result" | "error"}. onEvent sees progress and
// generated events as they come; the promise gives the result, the same answer as post().
async function postStreamed(path, body, onEvent) {
  const response = await send(path, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/x-ndjson" },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    const text = await response.text();
    let data = null;
    try {
      data = JSON.parse(text);
    } catch {
      // not JSON: shown as text
    }
    throw toApiError(response.status, data, text.slice(0, 300));
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += value;
    const lines = buffered.split("\n");
    buffered = lines.pop(); // a line not finished yet
    for (const line of lines.filter((text) => text.trim())) {
      const event = JSON.parse(line);
      if (event.type === "result") return event.result;
      if (event.type === "error") throw toApiError(event.status_code, { detail: event.detail }, event.detail);
      onEvent(event);
    }
  }
  throw new ApiError(0, "The service closed the stream before the result");
}

export const generate = (body, onEvent) => postStreamed("v1/generate", body, onEvent);
export const refine = (body, onEvent) => postStreamed("v1/refine", body, onEvent);
export const upscale = (body) => post("v1/upscale", body);
// {models: [{stage, name, model, weights, vocabulary}], world: {summary, words, caption_forms, example_prompts, ...} | null}
export const models = () => get("v1/models");
// The stored PNG, with its prompt, seed and parameters in its text chunks.
export const imageUrl = (id) => `v1/images/${encodeURIComponent(id)}`;
export const pngDataUrl = (base64) => `data:image/png;base64,${base64}`;
