// Calls to the controller's /ui/api and /v1, with the API key when one is set.

const KEY_SLOT = "edgefleet.apiKey";

/** The API key entered in this tab, or "". */
export const apiKey = () => sessionStorage.getItem(KEY_SLOT) || "";

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_SLOT, key);
  else sessionStorage.removeItem(KEY_SLOT);
}

/** An answer the controller refused, with its own message. */
export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

/** Headers for a call: the key (when set) and any extra ones. */
export function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

/** Raise ApiError for a failed response; a 401 also tells the page a key is needed. */
export async function check(response) {
  if (response.ok) return response;
  let type = `http ${response.status}`;
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error) {
      type = body.error.type || type;
      message = body.error.message || message;
    }
  } catch {
    // Not JSON (a proxy's page): the status line says enough.
  }
  if (response.status === 401) {
    window.dispatchEvent(new CustomEvent("edgefleet:unauthorized", { detail: message }));
  }
  throw new ApiError(response.status, type, message);
}

async function call(path, init = {}) {
  let response;
  try {
    response = await fetch(path, { ...init, headers: headers(init.headers), cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, "unreachable", `cannot reach the controller (${err.message})`);
  }
  await check(response);
  return response.json();
}

/** GET /ui/api/<path> as JSON. */
export const get = (path, params) => {
  const query = params ? `?${new URLSearchParams(params)}` : "";
  return call(`/ui/api/${path}${query}`);
};

/** POST /ui/api/<path> with a JSON body. */
export const post = (path, body) =>
  call(`/ui/api/${path}`, {
    method: "POST",
    body: JSON.stringify(body),
    headers: { "Content-Type": "application/json" },
  });
