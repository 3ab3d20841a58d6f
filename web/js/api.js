// The REST client of the page: same-origin requests only, with the visitor's
// token (kept in sessionStorage, this tab only) as `Authorization: Bearer`.

const TOKEN_KEY = 'jesse-mcp-token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An API error: the HTTP status and the `{code, message, details}` envelope. */
export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = error?.code || 'http_error';
    this.details = error?.details ?? null;
  }
}

let unauthorized = () => {};
/** Called when the API answers 401: the page asks for a token. */
export function onUnauthorized(callback) {
  unauthorized = callback;
}

/**
 * `api('/v1/jobs')` → parsed JSON. `{method, body}` sends JSON; `{text: true}`
 * returns the body as text (CSV).
 */
export async function api(path, { method = 'GET', body, text = false } = {}) {
  const headers = { Accept: text ? 'text/csv' : 'application/json' };
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
  });
  if (!response.ok) {
    const envelope = await response.json().catch(() => null);
    const error = new ApiError(response.status, envelope?.error);
    if (response.status === 401) unauthorized(error);
    throw error;
  }
  return text ? response.text() : response.json();
}

export const enc = encodeURIComponent;

/** Every row of a paged list (`next_cursor`), at most `max` rows. */
export async function allPages(path, key, max = 1000) {
  const rows = [];
  let cursor = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page = await api(cursor ? `${path}${sep}cursor=${enc(cursor)}` : path);
    rows.push(...(page[key] || []));
    cursor = page.next_cursor;
  } while (cursor && rows.length < max);
  return rows;
}

export const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);
