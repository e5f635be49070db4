// bertsweep dashboard: talking to the coordinator. fetch + JSON with its errors (ApiError; a 401
// sends the browser to the login page), the error banner and the page-wide error handlers,
// throttled refetching, and the live event stream of a study (server-sent events) with its
// reconnect and resync signals.

import { enc } from './format.js';
import { h, setKids } from './dom.js';

export const apiStudy = (name) => `/api/studies/${enc(name)}`;

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}
export class Redirecting extends Error {}

let redirecting = false;

function loginRedirect() {
  if (redirecting) return;
  redirecting = true;
  location.assign(`/login?next=${enc(location.pathname + location.search)}`);
}

function showError(message) {
  const banner = document.getElementById('banner');
  if (!banner) return;
  const text = String(message || 'something went wrong').split('\n')[0];
  setKids(banner,
    h('span', { class: 'banner-msg', title: text }, text),
    h('button', { class: 'banner-close', type: 'button', 'aria-label': 'Dismiss', onclick: () => { banner.hidden = true; } }, '×'),
  );
  banner.hidden = false;
}

export function errorText(e) {
  if (e instanceof ApiError) return e.message;
  return (e && e.message) || String(e);
}

/** Shows a failure in the banner (redirects to the login page are not failures). */
export function reportError(e, context) {
  if (e instanceof Redirecting || redirecting) return;
  const msg = errorText(e);
  showError(context ? `${context}: ${msg}` : msg);
  console.info('bertsweep dashboard:', context || '', msg);
}

window.addEventListener('unhandledrejection', (ev) => {
  ev.preventDefault();
  reportError(ev.reason);
});
window.addEventListener('error', (ev) => {
  if (ev.error === undefined && !ev.message) return;
  ev.preventDefault();
  reportError(ev.error || ev.message, 'internal error');
});

/**
 * fetch + JSON. Errors become ApiError carrying the server's `error` text; a 401 sends the
 * browser to the login page (unless opts.noRedirect, used where a token is being checked).
 */
export async function api(path, opts = {}) {
  if (redirecting) throw new Redirecting('redirecting to login');
  let resp;
  try {
    resp = await fetch(path, {
      method: opts.method || 'GET',
      credentials: 'same-origin',
      cache: 'no-store',
      headers: Object.assign({ Accept: 'application/json' }, opts.headers || {}),
      body: opts.body,
    });
  } catch (e) {
    throw new ApiError(0, `cannot reach the coordinator (${path}): ${errorText(e)}`);
  }
  if (resp.status === 401 && !opts.noRedirect) {
    loginRedirect();
    throw new Redirecting('redirecting to login');
  }
  let text = '';
  try { text = await resp.text(); } catch (_) { text = ''; }
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (_) { data = null; }
  }
  if (!resp.ok) {
    const msg = data && typeof data.error === 'string' && data.error
      ? data.error
      : `${resp.status} ${resp.statusText || 'error'} from ${path}`;
    throw new ApiError(resp.status, msg);
  }
  if (data === null || typeof data !== 'object') {
    throw new ApiError(resp.status, `unexpected reply from ${path} (not JSON)`);
  }
  return data;
}

/** Runs fn at most once per `interval` ms; requests in between collapse into one trailing call. */
export function throttled(interval, fn) {
  let last = -Infinity;
  let timer = null;
  let inflight = null;
  let again = false;
  function run() {
    timer = null;
    if (inflight) { again = true; return inflight; }
    last = performance.now();
    inflight = Promise.resolve()
      .then(fn)
      .catch((e) => reportError(e))
      .finally(() => {
        inflight = null;
        if (again) { again = false; request(); }
      });
    return inflight;
  }
  function request() {
    if (timer) return;
    if (inflight) { again = true; return; }
    timer = setTimeout(run, Math.max(0, last + interval - performance.now()));
  }
  function now() {
    if (timer) { clearTimeout(timer); timer = null; }
    return run();
  }
  return { request, now };
}

// One live stream of a study's changes (server-sent events), shared by the study and trial
// pages. `on` takes: live(bool) for the indicator, count() per event (tests read the count),
// reconnected() after the browser re-opened a dropped stream (what changed meanwhile was
// missed), and one handler per event type (trial, study, resync, end) given the parsed data.
// A stream the browser gives up on asks /api/session why (an expired session goes to the
// login page). Returns { close() }, or null where the browser has no EventSource.
export function studyEvents(name, on) {
  if (typeof EventSource === 'undefined') return null;
  const es = new EventSource(`${apiStudy(name)}/events`);
  let active = true;
  let opened = false;
  const stream = {
    close() {
      if (active) { active = false; es.close(); }
      on.live(false);
    },
    get open() { return active; },
  };
  es.onopen = () => {
    if (!active) return;
    on.live(true);
    if (opened) on.reconnected();
    opened = true;
  };
  es.onerror = () => {
    if (!active) return;
    on.live(false);
    if (es.readyState === EventSource.CLOSED) {
      active = false;
      api('/api/session').catch((e) => reportError(e));
    }
  };
  for (const type of ['trial', 'study', 'resync', 'end']) {
    es.addEventListener(type, (ev) => {
      if (!active) return;
      let data = null;
      try {
        data = ev.data ? JSON.parse(ev.data) : null;
      } catch (_) {
        console.info('bertsweep dashboard: unreadable event', ev.type);
      }
      on[type](data);
      // A study event after a reconnect confirms the stream is live again.
      if (type === 'study' && active && es.readyState === EventSource.OPEN) on.live(true);
      if (type === 'end') stream.close();
      on.count();
    });
  }
  return stream;
}
