// The only network code of the UI: same-origin calls to the proxy's own /api, /admin and /v1
// routes. Two ways to be signed in:
//  - an app token pasted on the login page (kept in sessionStorage, sent as a bearer);
//  - a web session (sign-in with the OpenID issuer, auth.oidc): the HttpOnly cookie goes with
//    every /api and /admin call, and state-changing calls carry the `x-byok-csrf` value of
//    GET /api/me. /v1 never accepts the cookie, so for Chat and Models the page mints itself a
//    short-lived app token limited to the chat and models routes ("web UI (this tab)"),
//    kept in sessionStorage and revoked at logout.
// Errors become ApiError with the message of the proxy's error envelope
// ({"error":{"message",...}}), in words.

const TOKEN_KEY = 'byok-proxy.token';
const UI_TOKEN_KEY = 'byok-proxy.ui-token';

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  /** The CSRF value of the web session (null with an app token). */
  csrf: null,
  /** Signed in at all: by token, or by web session (csrf known). */
  get active() {
    return Boolean(this.token || this.csrf);
  },
  set(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  useSession(csrf) {
    this.csrf = csrf;
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(UI_TOKEN_KEY);
    this.csrf = null;
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

const UNSAFE = new Set(['POST', 'PATCH', 'PUT', 'DELETE']);

/** The page's own token for /v1 while signed in by web session (minted on first use). */
async function uiToken() {
  const saved = sessionStorage.getItem(UI_TOKEN_KEY);
  if (saved) {
    try {
      const t = JSON.parse(saved);
      if (t && t.token && (!t.expires_at || Date.parse(t.expires_at) > Date.now() + 60_000)) return t;
    } catch {
      /* minted again below */
    }
  }
  const made = await api('/api/tokens', {
    method: 'POST',
    body: { name: 'web UI (this tab)', expires_in: '12h', scopes: { allowed_routes: ['chat', 'models'] } },
  });
  const t = { id: made.id, token: made.token, expires_at: made.expires_at };
  sessionStorage.setItem(UI_TOKEN_KEY, JSON.stringify(t));
  return t;
}

/** Headers for a /v1 call: the pasted token, or the page's own one under a web session. */
export async function v1AuthHeaders() {
  if (session.token) return authHeaders(session.token);
  return authHeaders((await uiToken()).token);
}

/** Forgets (and revokes, best effort) the page's own /v1 token: at logout. */
export async function dropUiToken() {
  const saved = sessionStorage.getItem(UI_TOKEN_KEY);
  sessionStorage.removeItem(UI_TOKEN_KEY);
  if (!saved || !session.csrf) return;
  try {
    const t = JSON.parse(saved);
    if (t && t.id) await api(`/api/tokens/${t.id}`, { method: 'DELETE', notify: false });
  } catch {
    /* it expires on its own */
  }
}

/**
 * A JSON call. Resolves to the parsed body (null for 204), rejects with ApiError.
 * `token` overrides the session token (login check); `notify: false` keeps a 401 from
 * logging the user out (also for the login check).
 */
export async function api(path, { method = 'GET', body, signal, token, notify = true, retried = false } = {}) {
  const v1 = path.startsWith('/v1/');
  const bySession = !v1 && !token && !session.token;
  const headers = { accept: 'application/json' };
  if (v1 && !token) Object.assign(headers, await v1AuthHeaders());
  else Object.assign(headers, authHeaders(token ?? session.token));
  if (bySession && session.csrf && UNSAFE.has(method)) headers['x-byok-csrf'] = session.csrf;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
      credentials: bySession ? 'same-origin' : 'omit',
    });
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, NETWORK_MESSAGE, 'network');
  }
  if (resp.status === 204) return null;
  if (v1 && resp.status === 401 && !session.token && !retried) {
    // The page's own token was revoked (e.g. on the Tokens page): mint another once.
    sessionStorage.removeItem(UI_TOKEN_KEY);
    return api(path, { method, body, signal, token, notify, retried: true });
  }
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
