// The service's HTTP API as the page uses it: the API key from session storage, problem details as errors.

const KEY = "tbseg-api-key";

export class ApiError extends Error {
  /** A problem (RFC 9457) the service answered, or a network failure (status 0). */
  constructor(status, detail, retryAfter = null) {
    super(detail);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

export const auth = {
  needed: document.querySelector('meta[name="tbseg-auth"]')?.content === "key",
  get key() { return sessionStorage.getItem(KEY); },
  set key(value) { if (value) sessionStorage.setItem(KEY, value); else sessionStorage.removeItem(KEY); },
  onMissing: null, // set by the page: asks for a key, resolves when one is given
};

async function problemOf(response) {
  let detail = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    detail = body.detail || body.title || detail;
  } catch { /* not JSON: keep the status line */ }
  if (response.status === 413 && !detail.includes("limit")) detail = `too large for the service (${detail})`;
  const retry = response.headers.get("Retry-After");
  return new ApiError(response.status, detail, retry === null ? null : Number(retry));
}

/** fetch() with the API key; throws ApiError for any non-2xx answer (asking for a key again on 401). */
export async function call(path, options = {}) {
  if (auth.needed && !auth.key && auth.onMissing) await auth.onMissing();
  const headers = new Headers(options.headers || {});
  if (auth.key) headers.set("Authorization", `Bearer ${auth.key}`);
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (error) {
    throw new ApiError(0, `the service cannot be reached (${error.message})`);
  }
  if (response.status === 401 && auth.onMissing) {
    auth.key = null;
    await auth.onMissing("That key was not accepted.");
    return call(path, options);
  }
  if (!response.ok) throw await problemOf(response);
  return response;
}

export async function json(path, options = {}) {
  return (await call(path, options)).json();
}

export function sendJson(path, method, body) {
  return json(path, { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

/** Save an API answer as a file (the browser's download), e.g. a CSV or a zip. */
export async function download(path, filename) {
  const blob = await (await call(path)).blob();
  const url = URL.createObjectURL(blob);
  const a = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
