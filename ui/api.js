// The only network code of the UI: same-origin calls to the proxy's own /api and /v1 routes,
// with the app token from sessionStorage as a bearer. Errors become ApiError with the
// message of the proxy's error envelope ({"error":{"message",...}}), in words.

const TOKEN_KEY = 'byok-proxy.token';

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code || null;
  }
}

let unauthorizedHandler = null;
/** Called with the error whenever an authenticated call answers 401 (token revoked, expired…). */
export function onUnauthorized(fn) {
  unauthorizedHandler = fn;
}

const FALLBACK = {
  400: 'The proxy refused the request as invalid.',
  401: 'Your token was not accepted. Log in again with a valid app token.',
  403: 'You are not allowed to do this.',
  404: 'Not found.',
  413: 'The request is too large.',
  429: 'Too many requests. Wait a moment and retry.',
  500: 'The proxy hit an internal error. Retry, and tell your operator if it persists.',
  502: 'The upstream could not be reached. Retry shortly.',
  503: 'The proxy is busy or its database is unavailable. Retry shortly.',
  504: 'The upstream did not answer in time. Retry shortly.',
};

/** The human message of an error answer (OpenAI or Anthropic envelope), or a fallback. */
export function messageFrom(status, json) {
  const err = json && typeof json === 'object' ? json.error : null;
  if (err && typeof err === 'object' && typeof err.message === 'string' && err.message) return err.message;
  if (typeof err === 'string' && err) return err;
  if (json && typeof json.message === 'string' && json.message) return json.message;
  return FALLBACK[status] || `The proxy answered HTTP ${status}.`;
}

export function errorFrom(status, json, { notify = true } = {}) {
  const code = json && json.error && typeof json.error === 'object' ? json.error.code : null;
  const err = new ApiError(status, messageFrom(status, json), code);
  if (status === 401 && notify && unauthorizedHandler) unauthorizedHandler(err);
  return err;
}

export const NETWORK_MESSAGE = 'Cannot reach byok-proxy. Check that it is running and your network is up, then retry.';

export function authHeaders(token = session.token) {
  return token ? { authorization: `Bearer ${token}` } : {};
}

/**
 * A JSON call. Resolves to the parsed body (null for 204), rejects with ApiError.
 * `token` overrides the session token (login check); `notify: false` keeps a 401 from
 * logging the user out (also for the login check).
 */
export async function api(path, { method = 'GET', body, signal, token, notify = true } = {}) {
  const headers = { accept: 'application/json', ...authHeaders(token ?? session.token) };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, NETWORK_MESSAGE, 'network');
  }
  if (resp.status === 204) return null;
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!resp.ok) throw errorFrom(resp.status, json, { notify });
  return json;
}

/**
 * Provider health (issue 7). Resolves to a Map provider -> entry when
 * `GET /api/providers/health` answers 200, or null otherwise (endpoint absent or failing):
 * callers then hide every health badge.
 */
export async function loadHealth() {
  try {
    const body = await api('/api/providers/health');
    const list = body && Array.isArray(body.data) ? body.data : null;
    if (!list) return null;
    return new Map(list.filter((e) => e && e.provider).map((e) => [e.provider, e]));
  } catch (e) {
    return null;
  }
}
