// The images answered in this browser tab. Only small records are kept (id, prompt,
// where the image came from), in sessionStorage so a reload keeps them; the pixels
// stay in the service's store and are fetched by id.

const KEY = "dalleflow.history";

export function loadHistory() {
  try {
    const entries = JSON.parse(sessionStorage.getItem(KEY));
    return Array.isArray(entries) ? entries : [];
  } catch {
    return []; // unreadable (edited by hand, or an older format): start afresh
  }
}

// Adds entries not seen before, keeping the order they were answered in.
export function addToHistory(entries) {
  const history = loadHistory();
  const known = new Set(history.map((entry) => entry.id));
  for (const entry of entries) {
    if (!known.has(entry.id)) {
      history.push(entry);
      known.add(entry.id);
    }
  }
  sessionStorage.setItem(KEY, JSON.stringify(history));
  return history;
}
