// bertsweep dashboard: one script, no dependencies, no build step.
// Routes on location.pathname: "/" (studies), "/studies/{name}" (study), "/studies/{name}/trials/{n}" (trial).
// All data goes into the DOM through createElement/textContent: study names, params and errors are user input.
'use strict';

(() => {
  // ---------------------------------------------------------------- constants

  const PAGE_TRIALS = 2000; // trials per API page (the server's maximum)
  const PAGE_STUDIES = 500;
  const REDRAW_MS = 250; // at most one redraw per this many ms
  const IMPORTANCE_MS = 10000; // importance refetched at most this often
  const CONFIGS_MS = 5000; // configurations refetched at most this often
  const TRIAL_DETAIL_MS = 1000; // trial page: detail refetched at most this often
  const ROW_H = 30; // trial table row height (matches --row-h in app.css)
  const ROW_BUFFER = 10; // rows rendered above and below the visible window
  const MAX_CURVE_POINTS = 200; // curves longer than this are decimated when drawn
  const STATES = ['RUNNING', 'COMPLETED', 'PRUNED', 'FAILED', 'PENDING', 'PAUSED', 'STOPPED'];

  const COL = {
    completed: '#16a34a',
    pruned: '#d97706',
    running: '#2563eb',
    failed: '#dc2626',
    other: '#9ca3af',
    best: '#111827',
    bar: '#3b82f6',
    ci: 'rgba(37, 99, 235, 0.55)',
    tied: 'rgba(124, 58, 237, 0.07)',
    tiedText: '#6d28d9',
    band: 'rgba(99, 135, 240, 0.28)',
    bandEdge: '#6b8cf0',
    seed: '#2563eb',
    grid: '#eef0f3',
    axis: '#b6bcc6',
    text: '#4b5563',
    title: '#374151',
  };
  const FONT_FAMILY = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';
  const FONT = `11px ${FONT_FAMILY}`;
  const FONT_BOLD = `600 11px ${FONT_FAMILY}`;
  const FONT_MSG = `13px ${FONT_FAMILY}`;
  // Sequential colour scale for objective values, worst -> best (viridis, light end trimmed).
  const SCALE_STOPS = [[190, 220, 60], [94, 201, 98], [33, 145, 140], [59, 82, 139], [68, 1, 84]];
  const SCALE_LEVELS = 32;
  const SCALE_COLORS = Array.from({ length: SCALE_LEVELS }, (_, i) => scaleColor(i / (SCALE_LEVELS - 1)));

  // ---------------------------------------------------------------- small helpers

  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
  function clamp(v, lo, hi) { return Math.max(lo, Math.min(hi, v)); }
  const enc = encodeURIComponent;
  const studyPath = (name) => `/studies/${enc(name)}`;
  const trialPath = (name, n) => `/studies/${enc(name)}/trials/${enc(String(n))}`;
  const apiStudy = (name) => `/api/studies/${enc(name)}`;

  function scaleColor(t) {
    const x = clamp(t, 0, 1) * (SCALE_STOPS.length - 1);
    const i = Math.min(SCALE_STOPS.length - 2, Math.floor(x));
    const f = x - i;
    const a = SCALE_STOPS[i];
    const b = SCALE_STOPS[i + 1];
    const c = (k) => Math.round(a[k] + (b[k] - a[k]) * f);
    return `rgb(${c(0)},${c(1)},${c(2)})`;
  }

  /** createElement with attributes and children (strings become text nodes, never HTML). */
  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v == null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of children.flat(Infinity)) {
      if (c == null || c === false) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  /** replaceChildren without the null/false placeholders of conditional children. */
  function setKids(el, ...children) {
    el.replaceChildren(...children.flat(Infinity).filter((c) => c != null && c !== false));
  }

  function stateClass(state) {
    return STATES.includes(state) ? `st-${state.toLowerCase()}` : 'st-unknown';
  }

  function badge(state) {
    return h('span', { class: `badge ${stateClass(state)}` }, state || '?');
  }

  function expo(v, digits) {
    return Number(v.toPrecision(digits)).toExponential().replace('e+', 'e');
  }

  /** Objective values: 4 decimals; exponential for tiny or huge magnitudes. */
  function fmtValue(v) {
    if (v == null) return '—';
    if (!isNum(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e7)) return expo(v, 4);
    return v.toFixed(4);
  }

  /** Parameter values: integers as they are, learning rates like 2e-5, strings as they are. */
  function fmtParam(v) {
    if (v === undefined) return '';
    if (v === null) return 'null';
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) return String(v);
      const a = Math.abs(v);
      if (Number.isInteger(v)) return a >= 1e9 ? expo(v, 6) : String(v);
      if (a < 1e-3 || a >= 1e9) return expo(v, 4);
      return String(Number(v.toPrecision(6)));
    }
    if (typeof v === 'string') return v;
    if (typeof v === 'boolean') return String(v);
    try { return JSON.stringify(v); } catch (_) { return String(v); }
  }

  /** Generic numbers (metrics, tick labels of log axes). */
  function fmtNum(v) {
    if (!isNum(v)) return v == null ? '—' : String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e7)) return expo(v, 4);
    if (Number.isInteger(v)) return String(v);
    return String(Number(v.toPrecision(5)));
  }

  const pad2 = (n) => String(n).padStart(2, '0');

  /** Local time as "2026-11-27 20:39:20". */
  function fmtTime(ms) {
    if (!isNum(ms)) return '—';
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
      `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }

  function fmtClock(ms) {
    const d = new Date(ms);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }

  /** Durations as "45s", "3m 12s", "2h 5m", "1d 4h". */
  function fmtDuration(ms) {
    if (!isNum(ms) || ms < 0) return '—';
    const s = Math.round(ms / 1000);
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${s % 60}s`;
    const hr = Math.floor(m / 60);
    if (hr < 24) return `${hr}h ${m % 60}m`;
    return `${Math.floor(hr / 24)}d ${hr % 24}h`;
  }

  function fmtSize(bytes) {
    if (!isNum(bytes) || bytes < 0) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    let v = bytes;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return i === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
  }

  /** A `[low, high]` interval from the server, or null when it is missing or malformed. */
  function ciOf(x) {
    const ci = x ? x.ci : null;
    return Array.isArray(ci) && ci.length === 2 && isNum(ci[0]) && isNum(ci[1]) ? ci : null;
  }

  function fmtCi(ci) {
    return ci ? `${fmtValue(ci[0])} – ${fmtValue(ci[1])}` : '—';
  }

  /** Whether two intervals share a point (as the server's Interval::overlaps). */
  function ciOverlap(a, b) {
    return !!(a && b && a[0] <= b[1] && b[0] <= a[1]);
  }

  const TIED_TITLE = "interval overlaps the best's: may be tied";

  /** The mark of a trial or configuration whose interval overlaps the best's. */
  /** The test-set name of dev metric `metric` (`eval_X` -> `test_X`), or null. */
  function testCounterpart(metric) {
    return typeof metric === 'string' && metric.startsWith('eval_') ? `test_${metric.slice(5)}` : null;
  }

  /** A dev − test gap with its sign (ASCII, like the CLI's `{:+.4}`). */
  function fmtGap(v) {
    if (!isNum(v)) return '—';
    return `${v < 0 ? '-' : '+'}${Math.abs(v).toFixed(4)}`;
  }

  const HELD_OUT_NOTE = 'scored once on the held-out test set; never used to choose';

  function tiedBadge(title) {
    return h('span', { class: 'badge tied', title: title || TIED_TITLE }, '≈ best');
  }

  function trialDuration(t) {
    if (!t || !isNum(t.started_ms)) return null;
    const end = isNum(t.finished_ms) ? t.finished_ms : (t.state === 'RUNNING' ? Date.now() : null);
    return end == null ? null : Math.max(0, end - t.started_ms);
  }

  function shellQuote(s) {
    return /^[A-Za-z0-9._\-/:=+@%]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
  }

  function setBodyAttr(name, value) {
    document.body.setAttribute(name, String(value));
  }

  function markReady() {
    setBodyAttr('data-render-ms', Math.round(performance.now()));
    setBodyAttr('data-ready', '1');
  }

  // ---------------------------------------------------------------- errors, banner, API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }
  class Redirecting extends Error {}

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

  function errorText(e) {
    if (e instanceof ApiError) return e.message;
    return (e && e.message) || String(e);
  }

  /** Shows a failure in the banner (redirects to the login page are not failures). */
  function reportError(e, context) {
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
  async function api(path, opts = {}) {
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
  function throttled(interval, fn) {
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

  // ---------------------------------------------------------------- session (log out button)

  const session = { auth: false, role: null, can_stop: false, version: '' };
  let sessionPromise = null;

  function loadSession() {
    if (!sessionPromise) {
      sessionPromise = api('/api/session')
        .then((s) => {
          session.auth = !!s.auth;
          session.role = typeof s.role === 'string' ? s.role : null;
          // Only an admin's session is offered the Stop button (a viewer's would be refused).
          session.can_stop = !!s.can_stop;
          session.version = typeof s.version === 'string' ? s.version : '';
          renderSessionBox();
          return session;
        })
        .catch((e) => { reportError(e); return session; });
    }
    return sessionPromise;
  }

  function renderSessionBox() {
    const box = document.getElementById('session-box');
    const ver = document.getElementById('version');
    if (ver) ver.textContent = session.version ? `v${session.version}` : '';
    if (!box) return;
    box.replaceChildren(); // empty
    if (session.auth) {
      box.append(h('form', { method: 'post', action: '/logout' },
        session.role ? h('span', { class: 'session-role', id: 'session-role' }, session.role) : null,
        h('button', { class: 'btn', type: 'submit' }, 'Log out')));
    }
  }

  // ---------------------------------------------------------------- canvas plumbing

  /** Sizes a canvas for the device pixel ratio and returns a context in CSS pixels. */
  function setupCanvas(canvas, w, hgt) {
    const dpr = window.devicePixelRatio || 1;
    const W = Math.max(1, Math.round(w * dpr));
    const H = Math.max(1, Math.round(hgt * dpr));
    if (canvas.width !== W) canvas.width = W;
    if (canvas.height !== H) canvas.height = H;
    canvas.style.width = `${w}px`;
    canvas.style.height = `${hgt}px`;
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, hgt);
    ctx.font = FONT;
    ctx.lineJoin = 'round';
    ctx.lineCap = 'butt';
    return ctx;
  }

  function widthOf(el, fallback = 600) {
    const w = Math.floor(el.clientWidth);
    return w > 40 ? w : fallback;
  }

  function plotBox(w, hgt, m) {
    return { l: m.l, t: m.t, r: w - m.r, b: hgt - m.b, w: w - m.l - m.r, h: hgt - m.t - m.b, W: w, H: hgt };
  }

  function canvasMessage(ctx, w, hgt, text) {
    ctx.save();
    ctx.font = FONT_MSG;
    ctx.fillStyle = '#9ca3af';
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText(text, w / 2, hgt / 2);
    ctx.restore();
  }

  function truncateText(ctx, text, maxW) {
    if (maxW <= 0) return '';
    if (ctx.measureText(text).width <= maxW) return text;
    let lo = 0;
    let hi = text.length;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (ctx.measureText(`${text.slice(0, mid)}…`).width <= maxW) lo = mid; else hi = mid - 1;
    }
    return lo > 0 ? `${text.slice(0, lo)}…` : '';
  }

  /** A spatial hash of hover targets: nearest(x, y, r) in CSS pixels. */
  class HitGrid {
    constructor(cell = 16) {
      this.cell = cell;
      this.map = new Map();
    }
    key(cx, cy) { return (cx + 2048) * 8192 + (cy + 2048); }
    add(x, y, item) {
      if (!Number.isFinite(x) || !Number.isFinite(y)) return;
      item.x = x;
      item.y = y;
      const k = this.key(Math.floor(x / this.cell), Math.floor(y / this.cell));
      const list = this.map.get(k);
      if (list) list.push(item); else this.map.set(k, [item]);
    }
    nearest(x, y, r) {
      const c = this.cell;
      let best = null;
      let bd = r * r;
      for (let cx = Math.floor((x - r) / c); cx <= Math.floor((x + r) / c); cx++) {
        for (let cy = Math.floor((y - r) / c); cy <= Math.floor((y + r) / c); cy++) {
          const list = this.map.get(this.key(cx, cy));
          if (!list) continue;
          for (const it of list) {
            const d = (it.x - x) ** 2 + (it.y - y) ** 2;
            if (d <= bd) { bd = d; best = it; }
          }
        }
      }
      return best;
    }
  }

  /** Lazily built hover targets: built on the first mouse move after a redraw. */
  function lazy(build) {
    let v = null;
    return () => {
      if (v === null) v = build();
      return v;
    };
  }

  /** Tooltip + click-through for a canvas; the tooltip lives in `host` (position: relative). */
  function attachHover(canvas, host) {
    if (canvas.hoverAttached) return;
    canvas.hoverAttached = true;
    if (!host.tip) {
      host.tip = h('div', { class: 'chart-tip', hidden: true });
      host.append(host.tip);
    }
    const tip = host.tip;
    const find = (ev) => {
      const src = canvas.hits;
      if (!src) return null;
      const r = canvas.getBoundingClientRect();
      const g = src();
      return g ? g.nearest(ev.clientX - r.left, ev.clientY - r.top, 10) : null;
    };
    canvas.addEventListener('mousemove', (ev) => {
      const hit = find(ev);
      if (!hit) {
        tip.hidden = true;
        canvas.classList.remove('clickable');
        return;
      }
      tip.textContent = typeof hit.label === 'function' ? hit.label() : String(hit.label);
      tip.hidden = false;
      const hr = host.getBoundingClientRect();
      const tw = tip.offsetWidth;
      const th = tip.offsetHeight;
      let left = ev.clientX - hr.left + 14;
      let top = ev.clientY - hr.top + 14;
      if (left + tw > hr.width) left = Math.max(0, ev.clientX - hr.left - tw - 14);
      if (top + th > hr.height) top = Math.max(0, ev.clientY - hr.top - th - 10);
      tip.style.left = `${left}px`;
      tip.style.top = `${top}px`;
      canvas.classList.toggle('clickable', !!hit.href);
    });
    canvas.addEventListener('mouseleave', () => {
      tip.hidden = true;
      canvas.classList.remove('clickable');
    });
    canvas.addEventListener('click', (ev) => {
      const hit = find(ev);
      if (hit && hit.href) location.assign(hit.href);
    });
  }

  // ---------------------------------------------------------------- scales and axes

  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    if (!(raw > 0) || !Number.isFinite(raw)) return 1;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  }

  function fmtTick(v, step) {
    if (v === 0) return '0';
    const a = Math.abs(v);
    if (a < 1e-3 || a >= 1e7) return expo(v, 3);
    const dec = clamp(-Math.floor(Math.log10(step) + 1e-9), 0, 8);
    return v.toFixed(dec);
  }

  function linearTicks(d0, d1, count, integer) {
    const lo = Math.min(d0, d1);
    const hi = Math.max(d0, d1);
    let step = niceStep(hi - lo, count);
    if (integer) step = Math.max(1, Math.round(step));
    const out = [];
    const start = Math.ceil(lo / step - 1e-9);
    const end = Math.floor(hi / step + 1e-9);
    for (let i = start; i <= end && out.length < 60; i++) {
      const v = Number((i * step).toPrecision(12));
      out.push({ v, label: fmtTick(v, step) });
    }
    return out;
  }

  /** Linear scale: domain [d0, d1] onto pixels [r0, r1]. */
  function linScale(d0, d1, r0, r1, integer = false) {
    if (!isNum(d0) || !isNum(d1)) { d0 = 0; d1 = 1; }
    if (d0 === d1) {
      const pad = Math.abs(d0) * 0.05 || 0.5;
      d0 -= pad;
      d1 += pad;
    }
    const k = (r1 - r0) / (d1 - d0);
    const s = (v) => r0 + (v - d0) * k;
    s.kind = 'linear';
    s.ticks = (count) => linearTicks(d0, d1, count, integer);
    return s;
  }

  /** Log10 scale; ticks at powers of ten (1-2-5 within a decade or two). */
  function logScale(d0, d1, r0, r1) {
    let l0 = Math.log10(d0);
    let l1 = Math.log10(d1);
    if (!isNum(l0) || !isNum(l1)) { l0 = -1; l1 = 0; }
    if (l1 - l0 < 1e-9) { l0 -= 0.5; l1 += 0.5; }
    const k = (r1 - r0) / (l1 - l0);
    const s = (v) => (v > 0 ? r0 + (Math.log10(v) - l0) * k : NaN);
    s.kind = 'log';
    s.ticks = (count) => {
      const decades = l1 - l0;
      const mults = decades >= 2.5 ? [1] : decades >= 0.9 ? [1, 2, 5] : [1, 2, 3, 4, 5, 6, 7, 8, 9];
      const e0 = Math.floor(l0 + 1e-9);
      const e1 = Math.ceil(l1 - 1e-9);
      const stride = mults.length === 1 ? Math.max(1, Math.ceil((e1 - e0 + 1) / Math.max(2, count))) : 1;
      const out = [];
      for (let e = e0; e <= e1; e++) {
        if (((e % stride) + stride) % stride !== 0) continue;
        for (const m of mults) {
          const v = Number((m * 10 ** e).toPrecision(12));
          const l = Math.log10(v);
          if (l >= l0 - 1e-9 && l <= l1 + 1e-9) out.push({ v, label: fmtNum(v) });
        }
      }
      if (out.length >= 2) return out;
      return linearTicks(10 ** l0, 10 ** l1, count, false).filter((t) => t.v > 0);
    };
    return s;
  }

  const catKey = (v) => (v !== null && typeof v === 'object' ? `j${JSON.stringify(v)}` : `s${String(v)}`);

  /** Categorical scale: evenly spaced categories, each in the middle of its band. */
  function catScale(cats, r0, r1) {
    const index = new Map();
    cats.forEach((c, i) => index.set(catKey(c), i));
    const n = Math.max(1, cats.length);
    const step = (r1 - r0) / n;
    const s = (v) => {
      const i = index.get(catKey(v));
      return i === undefined ? NaN : r0 + step * (i + 0.5);
    };
    s.kind = 'cat';
    s.step = step;
    s.ticks = () => cats.map((c) => ({ v: c, label: fmtParam(c) }));
    return s;
  }

  /** The scale of a parameter axis over pixels [r0, r1], from its domain and the values seen. */
  function paramScale(p, trials, r0, r1) {
    const name = p.name;
    let numeric = p.kind === 'range';
    let lo = isNum(p.low) ? p.low : Infinity;
    let hi = isNum(p.high) ? p.high : -Infinity;
    const seen = new Map();
    for (const t of trials) {
      const v = t.params ? t.params[name] : undefined;
      if (v === undefined || v === null) continue;
      if (typeof v === 'number') {
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      } else {
        numeric = false;
      }
      if (p.kind !== 'range' && seen.size < 1000) seen.set(catKey(v), v);
    }
    if (p.kind !== 'range' || !numeric) {
      const cats = Array.isArray(p.values) ? p.values.slice() : [];
      const known = new Set(cats.map(catKey));
      const extra = [];
      for (const [k, v] of seen) if (!known.has(k)) extra.push(v);
      extra.sort((a, b) => (typeof a === 'number' && typeof b === 'number' ? a - b : String(a).localeCompare(String(b))));
      return catScale(cats.concat(extra), r0, r1);
    }
    if (!(lo <= hi)) { lo = 0; hi = 1; }
    if (p.log && lo > 0) return logScale(lo, hi, r0, r1);
    return linScale(lo, hi, r0, r1, !!p.integer);
  }

  /** Epoch axis: integer ticks, a little room on both sides so the first point is off the y axis. */
  function epochScale(e0, e1, box) {
    const hi = Math.max(e1, e0 + 1);
    const pad = Math.max(0.15, (hi - e0) * 0.02);
    return linScale(e0 - pad, hi + pad, box.l, box.r, true);
  }

  function paddedDomain(lo, hi, frac = 0.05) {
    if (!(lo <= hi)) return [0, 1];
    if (lo === hi) {
      const pad = Math.abs(lo) * 0.05 || 0.5;
      return [lo - pad, hi + pad];
    }
    const pad = (hi - lo) * frac;
    return [lo - pad, hi + pad];
  }

  function hline(ctx, x0, x1, y) {
    ctx.beginPath();
    ctx.moveTo(x0, y);
    ctx.lineTo(x1, y);
    ctx.stroke();
  }

  function vline(ctx, x, y0, y1) {
    ctx.beginPath();
    ctx.moveTo(x, y0);
    ctx.lineTo(x, y1);
    ctx.stroke();
  }

  /** Grid, tick labels, axis lines and titles of an x/y plot. Data is drawn afterwards. */
  function drawAxes(ctx, box, xs, ys, o = {}) {
    ctx.save();
    ctx.font = FONT;
    ctx.lineWidth = 1;
    // y: grid lines and labels
    const yTicks = ys.ticks(Math.max(2, Math.round(box.h / 42)));
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    let lastY = Infinity;
    for (const t of yTicks) {
      const y = Math.round(ys(t.v)) + 0.5;
      if (!(y >= box.t - 1 && y <= box.b + 1)) continue;
      ctx.strokeStyle = COL.grid;
      hline(ctx, box.l, box.r, y);
      if (lastY - y >= 11) {
        ctx.fillStyle = COL.text;
        ctx.fillText(truncateText(ctx, t.label, box.l - 10), box.l - 6, y);
        lastY = y;
      }
    }
    // x: tick marks and labels that do not overlap
    const xTicks = xs.ticks(Math.max(2, Math.round(box.w / 70)));
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    let lastRight = -Infinity;
    const maxLabel = xs.kind === 'cat' ? Math.max(24, xs.step - 4) : 120;
    for (const t of xTicks) {
      const x = Math.round(xs(t.v)) + 0.5;
      if (!(x >= box.l - 1 && x <= box.r + 1)) continue;
      ctx.strokeStyle = COL.axis;
      vline(ctx, x, box.b, box.b + 4);
      if (o.xGrid) {
        ctx.strokeStyle = COL.grid;
        vline(ctx, x, box.t, box.b);
      }
      const label = truncateText(ctx, t.label, maxLabel);
      const w = ctx.measureText(label).width;
      const lx = clamp(x, w / 2 + 1, box.W - w / 2 - 1);
      if (lx - w / 2 > lastRight + 6) {
        ctx.fillStyle = COL.text;
        ctx.fillText(label, lx, box.b + 6);
        lastRight = lx + w / 2;
      }
    }
    ctx.strokeStyle = COL.axis;
    vline(ctx, box.l + 0.5, box.t, box.b + 0.5);
    hline(ctx, box.l, box.r, box.b + 0.5);
    ctx.fillStyle = COL.title;
    if (o.xTitle) {
      ctx.textAlign = 'center';
      ctx.textBaseline = 'bottom';
      ctx.fillText(truncateText(ctx, o.xTitle, box.w), (box.l + box.r) / 2, box.H - 2);
    }
    if (o.yTitle) {
      ctx.save();
      ctx.translate(11, (box.t + box.b) / 2);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      ctx.fillText(truncateText(ctx, o.yTitle, box.h), 0, 0);
      ctx.restore();
    }
    ctx.restore();
  }

  function clipTo(ctx, box, pad = 4) {
    ctx.beginPath();
    ctx.rect(box.l - pad, box.t - pad, box.w + 2 * pad, box.h + 2 * pad);
    ctx.clip();
  }

  /** Filled dots for many points at once: one path per call. */
  function fillDots(ctx, pts, color, r, alpha = 1) {
    if (!pts.length) return;
    ctx.save();
    ctx.globalAlpha = alpha;
    ctx.fillStyle = color;
    ctx.beginPath();
    if (r <= 1.6) {
      for (const [x, y] of pts) ctx.rect(x - r, y - r, 2 * r, 2 * r);
    } else {
      for (const [x, y] of pts) {
        ctx.moveTo(x + r, y);
        ctx.arc(x, y, r, 0, 2 * Math.PI);
      }
    }
    ctx.fill();
    ctx.restore();
  }

  function dotRadius(n) {
    return n > 5000 ? 1.5 : n > 1000 ? 2 : n > 200 ? 2.6 : 3.2;
  }

  function legend(items) {
    return h('div', { class: 'legend' }, items.map(([cls, label]) =>
      h('span', { class: 'lg' }, h('span', { class: `sw ${cls}` }), label)));
  }

  function decimate(curve) {
    if (curve.length <= MAX_CURVE_POINTS) return curve;
    const step = Math.ceil(curve.length / MAX_CURVE_POINTS);
    const out = [];
    for (let i = 0; i < curve.length; i += step) out.push(curve[i]);
    if (out[out.length - 1] !== curve[curve.length - 1]) out.push(curve[curve.length - 1]);
    return out;
  }

  /** Small multiples: one titled canvas per name, reused while the names stay the same. */
  function ensureMinis(host, names) {
    const key = names.join('\u0000');
    if (host.miniKey !== key || !host.minis) {
      const grid = h('div', { class: 'minis' });
      host.minis = names.map((name) => {
        const canvas = h('canvas');
        const box = h('div', { class: 'mini' }, h('div', { class: 'mini-title', title: name }, name), canvas);
        grid.append(box);
        attachHover(canvas, host);
        return { name, box, canvas };
      });
      if (host.miniGrid) host.miniGrid.remove();
      host.insertBefore(grid, host.firstChild);
      host.miniGrid = grid;
      host.miniKey = key;
    }
    return host.minis;
  }

  /** A chart container: data-chart + data-series attributes, a canvas (or mini charts) and a message line. */
  function makeChart(id) {
    const el = h('div', { class: 'chart', 'data-chart': id, 'data-series': '0' });
    const canvas = h('canvas');
    const msg = h('div', { class: 'chart-msg', hidden: true });
    el.append(canvas, msg);
    attachHover(canvas, el);
    return { id, el, canvas, msg };
  }

  function chartMessage(chart, text, isError) {
    chart.canvas.hidden = true;
    chart.canvas.hits = null;
    if (chart.el.miniGrid) { chart.el.miniGrid.remove(); chart.el.miniGrid = null; chart.el.miniKey = null; }
    chart.msg.hidden = false;
    chart.msg.className = isError ? 'chart-msg err' : 'chart-msg';
    chart.msg.textContent = text;
  }

  function chartCanvas(chart) {
    chart.msg.hidden = true;
    chart.canvas.hidden = false;
    return chart.canvas;
  }

  function drawChart(chart, fn) {
    let n = 0;
    try {
      n = fn(chart) || 0;
    } catch (e) {
      n = 0;
      console.info('bertsweep dashboard: chart', chart.id, e);
      chartMessage(chart, `Could not draw this chart: ${errorText(e)}`, true);
    }
    chart.el.setAttribute('data-series', String(n));
  }

  // ---------------------------------------------------------------- router

  function route() {
    const app = document.getElementById('app');
    const raw = location.pathname.split('/').filter((s) => s !== '');
    let parts;
    try {
      parts = raw.map((s) => decodeURIComponent(s));
    } catch (_) {
      parts = null;
    }
    loadSession();
    if (parts && parts.length === 0) return studiesPage(app);
    if (parts && parts[0] === 'studies' && parts.length === 2) return studyPage(app, parts[1]);
    if (parts && parts[0] === 'studies' && parts.length === 4 && parts[2] === 'trials' && /^\d+$/.test(parts[3])) {
      return trialPage(app, parts[1], Number(parts[3]));
    }
    document.title = 'Not found · bertsweep';
    setKids(app, h('div', { class: 'card' },
      h('p', { class: 'chart-msg' }, 'No such page. ', h('a', { href: '/' }, 'Back to the studies.'))));
    markReady();
    return undefined;
  }

  // ================================================================ studies page

  // One live stream of a study's changes (server-sent events), shared by the study and trial
  // pages. `on` takes: live(bool) for the indicator, count() per event (tests read the count),
  // reconnected() after the browser re-opened a dropped stream (what changed meanwhile was
  // missed), and one handler per event type (trial, study, resync, end) given the parsed data.
  // A stream the browser gives up on asks /api/session why (an expired session goes to the
  // login page). Returns { close() }, or null where the browser has no EventSource.
  function studyEvents(name, on) {
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

  function studiesPage(app) {
    document.title = 'Studies · bertsweep';
    const status = h('span', { class: 'muted small' });
    const refresh = h('button', { class: 'btn', type: 'button', id: 'refresh' }, 'Refresh');
    const tbody = h('tbody');
    const table = h('table', { class: 'grid', id: 'studies-table' },
      h('thead', null, h('tr', null,
        h('th', null, 'Study'), h('th', null, 'State'), h('th', null, 'Progress'),
        h('th', { class: 'num' }, 'Running'), h('th', { class: 'num' }, 'Best value'),
        h('th', null, 'Sampler'), h('th', null, 'Early stopping'), h('th', null, 'Created'))),
      tbody);
    setKids(app,
      h('div', { class: 'page-head' }, h('h1', null, 'Studies'), h('div', { class: 'actions' }, status, refresh)),
      h('div', { class: 'card table-wrap' }, table),
    );

    function row(s) {
      const c = s.counts || {};
      const done = (c.completed || 0) + (c.pruned || 0) + (c.failed || 0) + (c.stopped || 0);
      const max = isNum(s.max_trials) ? s.max_trials : null;
      const fill = h('div', { class: 'bar-fill' });
      fill.style.width = `${max ? clamp((100 * done) / max, 0, 100) : 0}%`;
      const best = isNum(s.best_value)
        ? (s.best_trial != null
          ? h('a', { href: trialPath(s.name, s.best_trial), title: `trial ${s.best_trial}` }, fmtValue(s.best_value))
          : fmtValue(s.best_value))
        : '—';
      return h('tr', { 'data-study': s.name },
        h('td', null, h('a', { href: studyPath(s.name) }, s.name)),
        h('td', null, badge(s.state)),
        h('td', null, h('div', { class: 'progress' },
          h('span', { class: 'progress-text' }, `${done}/${max == null ? '∞' : max}`),
          max ? h('div', { class: 'bar', title: `${done} of ${max} trials done` }, fill) : null)),
        h('td', { class: 'num' }, String(c.running || 0)),
        h('td', { class: 'num' }, best),
        h('td', null, s.sampler || '—'),
        h('td', null, s.early_stopping || 'none'),
        h('td', null, fmtTime(s.created_ms)));
    }

    async function load() {
      refresh.disabled = true;
      status.textContent = 'Loading…';
      try {
        const rows = [];
        let from = null;
        for (let guard = 0; guard < 10000; guard++) {
          const q = new URLSearchParams({ limit: String(PAGE_STUDIES) });
          if (from != null) q.set('from', String(from));
          const page = await api(`/api/studies?${q}`);
          if (Array.isArray(page.studies)) rows.push(...page.studies);
          from = page.next;
          if (from == null) break;
        }
        setKids(tbody, ...(rows.length
          ? rows.map(row)
          : [h('tr', { class: 'empty' }, h('td', { colspan: 8 }, 'No studies yet. Create one with the bertsweep CLI.'))]));
        status.textContent = `${rows.length} ${rows.length === 1 ? 'study' : 'studies'} · updated ${fmtClock(Date.now())}`;
      } catch (e) {
        reportError(e);
        status.textContent = '';
      } finally {
        refresh.disabled = false;
        markReady();
      }
    }

    refresh.addEventListener('click', () => { load(); });
    load();
  }

  // ================================================================ study page

  function studyPage(app, name) {
    document.title = `${name} · bertsweep`;
    const S = {
      name,
      study: null,
      params: [],
      maxEpochs: null,
      trials: new Map(),
      list: [],
      listDirty: true,
      importance: { state: 'pending' },
      configs: { state: 'pending' },
      es: null,
      events: 0,
      topK: 'all',
      table: { sortKey: 'number', sortDir: 1, state: '', text: '', rows: [], colsKey: '', cols: [] },
      loaded: false,
    };
    setBodyAttr('data-events', 0);
    setBodyAttr('data-live', 0);

    // ----- skeleton
    const headMain = h('div', { class: 'head-main' }, h('p', { class: 'loading' }, 'Loading study…'));
    const stopArea = h('div', { class: 'stop-area' });
    const charts = {
      history: makeChart('history'),
      curves: makeChart('curves'),
      parallel: makeChart('parallel'),
      slice: makeChart('slice'),
      importance: makeChart('importance'),
      seeds: makeChart('seeds'),
    };
    const topkSelect = h('select', { id: 'curves-topk', 'data-control': 'topk', 'aria-label': 'Curves shown' },
      h('option', { value: 'all' }, 'all'), ...[10, 25, 50, 100].map((k) => h('option', { value: String(k) }, `top ${k}`)));
    topkSelect.addEventListener('change', () => {
      S.topK = topkSelect.value === 'all' ? 'all' : Number(topkSelect.value);
      drawChart(charts.curves, drawCurves);
    });
    const importanceNote = h('div', { class: 'panel-note' });
    const seedsNote = h('div', { class: 'panel-note' });
    const parallelLegend = h('div', { class: 'legend' });

    function panel(title, chart, extra = {}) {
      return h('section', { class: extra.wide ? 'panel wide' : 'panel', id: `panel-${chart.id}` },
        h('div', { class: 'panel-head' }, h('h2', null, title), extra.legend || null,
          extra.tools ? h('div', { class: 'tools' }, extra.tools) : null),
        chart.el, extra.note || null);
    }

    // trial table
    const T = S.table;
    const stateFilter = h('select', { id: 'trials-state', 'aria-label': 'Filter by state' },
      h('option', { value: '' }, 'All states'), STATES.map((s) => h('option', { value: s }, s)));
    const textFilter = h('input', { type: 'search', id: 'trials-filter', placeholder: 'Filter by parameter or worker…', 'aria-label': 'Filter trials' });
    const countText = h('span', { class: 'count', id: 'trials-count' }, '');
    const csvLink = h('a', { class: 'csv', href: `${apiStudy(name)}/trials.csv`, download: `${name}-trials.csv` }, 'Download CSV');
    const thead = h('thead');
    const tbody = h('tbody');
    const table = h('table', { class: 'trials', id: 'trials-table' }, thead, tbody);
    const scroller = h('div', { class: 'table-scroll', id: 'trials-scroll' }, table);
    stateFilter.addEventListener('change', () => { T.state = stateFilter.value; refreshTable(); });
    textFilter.addEventListener('input', () => { T.text = textFilter.value.trim().toLowerCase(); refreshTable(); });
    let scrollQueued = false;
    scroller.addEventListener('scroll', () => {
      if (scrollQueued) return;
      scrollQueued = true;
      requestAnimationFrame(() => { scrollQueued = false; renderTableWindow(); });
    }, { passive: true });

    setKids(app,
      h('nav', { class: 'crumbs' }, h('a', { href: '/' }, 'Studies'), h('span', { class: 'sep' }, '/'), h('span', { class: 'here' }, name)),
      h('section', { class: 'card study-head' }, headMain, stopArea),
      h('div', { class: 'panels' },
        panel('Optimization history', charts.history, {
          legend: legend([['sw-dot c-completed', 'completed'], ['sw-dot c-pruned', 'pruned'], ['sw-line c-best', 'best so far']]),
        }),
        panel('Learning curves', charts.curves, {
          legend: legend([['sw-line c-completed', 'completed'], ['sw-x', 'pruned'], ['sw-dash c-running', 'running'], ['sw-thick c-best', 'best']]),
          tools: [h('label', { for: 'curves-topk' }, 'Show'), topkSelect],
        }),
        panel('Parallel coordinates', charts.parallel, { wide: true, legend: parallelLegend }),
        panel('Slices', charts.slice, {
          wide: true,
          legend: legend([['sw-dot c-completed', 'completed'], ['sw-dot c-pruned', 'pruned (value at stop)']]),
        }),
        panel('Parameter importance', charts.importance, { note: importanceNote }),
        panel('Seed spread', charts.seeds, {
          legend: legend([['sw-box c-band', 'mean ± std'], ['sw-dot c-seed', 'seed'], ['sw-line c-ci', "seed's 95% CI"], ['sw-tied', 'overlaps the best trial']]),
          note: seedsNote,
        }),
        h('section', { class: 'panel wide', id: 'panel-trials' },
          h('div', { class: 'panel-head' }, h('h2', null, 'Trials')),
          h('div', { class: 'table-tools' }, stateFilter, textFilter, countText, csvLink),
          scroller)),
    );

    // ----- data

    const maximize = () => !(S.study && S.study.objective && S.study.objective.direction === 'minimize');
    const better = (a, b) => (maximize() ? a > b : a < b);
    const metricName = () => (S.study && S.study.objective && S.study.objective.metric) || 'value';
    const searched = () => S.params.filter((p) => p.kind !== 'fixed' && p.name !== 'seed');

    function revOlder(a, b) {
      // true when revision a is strictly older than b ([lease token, step], compared in order)
      if (!Array.isArray(a) || !Array.isArray(b)) return false;
      for (let i = 0; i < Math.min(a.length, b.length); i++) {
        if (a[i] !== b[i]) return a[i] < b[i];
      }
      return false;
    }

    function upsert(t) {
      if (!t || !isNum(t.number)) return;
      const old = S.trials.get(t.number);
      if (old && revOlder(t.rev, old.rev)) return; // an event older than what is shown
      S.trials.set(t.number, t);
      S.listDirty = true;
      // a value, state or parameter change moves points in history, parallel and slices
      if (!old || old.value !== t.value || old.state !== t.state || JSON.stringify(old.params) !== JSON.stringify(t.params)) {
        dirty.add('values');
      }
      dirty.add('curves');
      dirty.add('table');
    }

    function trialList() {
      if (S.listDirty) {
        S.list = Array.from(S.trials.values()).sort((a, b) => a.number - b.number);
        S.listDirty = false;
      }
      return S.list;
    }

    function setStudy(row) {
      if (!row || typeof row !== 'object' || row.name === undefined) return;
      if (S.study && S.study.best_trial !== row.best_trial) {
        dirty.add('curves'); // the best trial's curve is highlighted
        dirty.add('table'); // and so is its row
      }
      S.study = row;
    }

    async function loadStudy() {
      const d = await api(apiStudy(name));
      setStudy(d.study);
      S.params = Array.isArray(d.parameters) ? d.parameters : [];
      S.maxEpochs = isNum(d.max_epochs) ? d.max_epochs : null;
    }

    async function loadTrials() {
      const base = `${apiStudy(name)}/trials`;
      const ingest = (page) => { if (page && Array.isArray(page.trials)) page.trials.forEach(upsert); };
      const first = await api(`${base}?limit=${PAGE_TRIALS}`);
      ingest(first);
      if (first.next == null) return;
      const total = isNum(first.total) ? first.total : 0;
      const got = Array.isArray(first.trials) ? first.trials.length : 0;
      const pages = Math.ceil(Math.max(0, total - got) / PAGE_TRIALS);
      const start = Number(first.next);
      const froms = [];
      for (let i = 0; i < pages; i++) froms.push(start + i * PAGE_TRIALS);
      const results = await Promise.all(froms.map((f) => api(`${base}?from=${f}&limit=${PAGE_TRIALS}`)));
      results.forEach(ingest);
      // Trials created meanwhile (or gaps in numbering): follow `next` from the last page.
      let next = results.length ? results[results.length - 1].next : first.next;
      for (let guard = 0; next != null && guard < 1000; guard++) {
        const page = await api(`${base}?from=${enc(String(next))}&limit=${PAGE_TRIALS}`);
        ingest(page);
        next = page.next;
      }
    }

    async function loadAll() {
      await Promise.all([loadStudy(), loadTrials()]);
      S.loaded = true;
    }

    const importanceFetch = throttled(IMPORTANCE_MS, async () => {
      try {
        const d = await api(`${apiStudy(name)}/importance`);
        S.importance = { state: 'ok', data: d };
      } catch (e) {
        if (e instanceof Redirecting) return;
        S.importance = { state: 'error', error: errorText(e), status: e.status };
        if (!(e instanceof ApiError) || e.status !== 422) reportError(e, 'importance');
      } finally {
        scheduleRender('importance');
      }
    });

    const configsFetch = throttled(CONFIGS_MS, async () => {
      try {
        const d = await api(`${apiStudy(name)}/configurations`);
        S.configs = { state: 'ok', data: d };
      } catch (e) {
        if (e instanceof Redirecting) return;
        S.configs = { state: 'error', error: errorText(e) };
        reportError(e, 'configurations');
      } finally {
        scheduleRender('seeds');
      }
    });

    // ----- rendering (coalesced)

    let renderTimer = null;
    let lastRender = -Infinity;
    // What the next redraw must redo: 'values' (history, parallel, slices), 'curves', 'table',
    // 'importance', 'seeds', or 'all'. The header is always redrawn (it is cheap).
    const dirty = new Set(['all']);

    function scheduleRender(...keys) {
      for (const k of keys) dirty.add(k);
      if (renderTimer || !S.loaded) return;
      renderTimer = setTimeout(() => {
        renderTimer = null;
        renderAll();
      }, Math.max(0, lastRender + REDRAW_MS - performance.now()));
    }

    /** Redraws what changed since the last redraw (everything when 'all' is marked). */
    function renderAll() {
      if (renderTimer) { clearTimeout(renderTimer); renderTimer = null; }
      lastRender = performance.now();
      if (!S.study) return;
      const all = dirty.has('all');
      const marked = new Set(dirty);
      dirty.clear();
      const need = (k) => all || marked.has(k);
      trialList();
      try { renderHeader(); } catch (e) { reportError(e, 'header'); }
      if (need('values')) {
        drawChart(charts.history, drawHistory);
        drawChart(charts.parallel, drawParallel);
        drawChart(charts.slice, drawSlices);
      }
      if (need('curves')) drawChart(charts.curves, drawCurves);
      if (need('importance')) drawChart(charts.importance, drawImportance);
      if (need('seeds')) drawChart(charts.seeds, drawSeeds);
      if (need('table')) {
        try { refreshTable(); } catch (e) { reportError(e, 'trial table'); }
      }
    }

    window.addEventListener('resize', () => scheduleRender('all'));

    // ----- header and stop button

    function stat(label, value, wide = false) {
      return h('div', { class: wide ? 'stat wide' : 'stat' }, h('dt', null, label), h('dd', null, value));
    }

    function renderHeader() {
      const s = S.study;
      const c = s.counts || {};
      const done = (c.completed || 0) + (c.pruned || 0) + (c.failed || 0) + (c.stopped || 0);
      const max = isNum(s.max_trials) ? s.max_trials : null;
      const obj = s.objective || {};
      const live = !!(S.es && S.es.open);
      // The best trial's held-out test score beside its own dev value (shown, never chosen
      // by). With seed repeats the best value is its configuration's mean, so the trial's own
      // dev value is named too and the gap is the trial's.
      const bestRow = s.best_trial != null ? S.trials.get(s.best_trial) : null;
      const bestTest = bestRow && isNum(bestRow.test_value) && isNum(bestRow.value) ? bestRow.test_value : null;
      const testName = testCounterpart(obj.metric) || 'test';
      let testLine = null;
      if (bestTest != null) {
        const gap = fmtGap(bestRow.value - bestTest);
        testLine = h('span', {
          class: 'test-value',
          id: 'best-test-value',
          'data-value': bestTest,
          title: `${testName} of trial ${bestRow.number}: ${HELD_OUT_NOTE}. Selection optimism (dev − test): ${gap}`,
        },
        bestRow.value !== s.best_value ? `trial dev ${fmtValue(bestRow.value)} · ` : null,
        `test ${fmtValue(bestTest)}`, h('span', { class: 'muted' }, ` (dev − test ${gap})`));
      }
      const best = isNum(s.best_value)
        ? h('span', null, h('span', { id: 'best-dev-value', title: `${obj.metric || 'value'} on the dev set` }, fmtValue(s.best_value)),
          s.best_trial != null ? [' (', h('a', { href: trialPath(name, s.best_trial), id: 'best-trial-link' }, `trial ${s.best_trial}`), ')'] : null,
          testLine ? [h('br'), testLine] : null)
        : '—';
      const fill = h('div', { class: 'bar-fill' });
      fill.style.width = `${max ? clamp((100 * done) / max, 0, 100) : 0}%`;
      setKids(headMain,
        h('div', { class: 'title-row' }, h('h1', null, s.name), badge(s.state)),
        h('div', { class: 'subtitle' },
          h('span', { class: live ? 'live-dot on' : 'live-dot', title: live ? 'live updates on' : 'not live' }),
          `${obj.direction || 'maximize'} ${obj.metric || '?'}`,
          s.reason ? [' · ', h('span', { class: 'reason' }, s.reason)] : null),
        h('dl', { class: 'stats' },
          stat('Progress', h('div', { class: 'progress' },
            h('span', { class: 'progress-text' }, `${done}/${max == null ? '∞' : max}`),
            max ? h('div', { class: 'bar' }, fill) : null)),
          stat('Best value', best, !!testLine),
          stat('Sampler', s.sampler || '—'),
          stat('Early stopping', s.early_stopping || 'none'),
          stat('Seed repeats', String(isNum(s.repeats) ? s.repeats : 1)),
          stat('Created', fmtTime(s.created_ms)),
          isNum(s.finished_ms) ? stat('Finished', fmtTime(s.finished_ms)) : null),
        h('div', { class: 'counts' },
          ['completed', 'pruned', 'running', 'paused', 'pending', 'failed', 'stopped'].map((k) =>
            h('span', { class: 'count-chip' }, h('b', null, String(c[k] || 0)), ` ${k}`))
            .reduce((acc, el, i) => (i ? acc.concat([' · ', el]) : [el]), [])),
      );
      updateStopArea();
    }

    const stopButton = h('button', { class: 'btn danger', type: 'button', id: 'stop-study' }, 'Stop study');
    const tokenInput = h('input', { type: 'password', id: 'stop-token', placeholder: 'Coordinator token', autocomplete: 'off', 'aria-label': 'Coordinator token' });
    const confirmButton = h('button', { class: 'btn danger-solid', type: 'submit', id: 'stop-confirm' }, 'Confirm stop');
    const cancelButton = h('button', { class: 'btn', type: 'button' }, 'Cancel');
    const stopError = h('div', { class: 'error-line', id: 'stop-error', role: 'alert' });
    const stopForm = h('form', { class: 'stop-form', hidden: true }, tokenInput, confirmButton, cancelButton);
    stopArea.append(stopButton, stopForm, stopError);
    stopArea.hidden = true;
    stopButton.addEventListener('click', () => {
      stopButton.hidden = true;
      stopForm.hidden = false;
      stopError.textContent = '';
      tokenInput.focus();
    });
    cancelButton.addEventListener('click', () => {
      stopForm.hidden = true;
      stopButton.hidden = false;
      stopError.textContent = '';
      tokenInput.value = '';
    });
    stopForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const token = tokenInput.value.trim();
      if (!token) {
        stopError.textContent = 'Enter the coordinator token to stop the study.';
        return;
      }
      confirmButton.disabled = true;
      stopError.textContent = '';
      try {
        const d = await api(`${apiStudy(name)}/stop`, {
          method: 'POST',
          noRedirect: true,
          headers: { Authorization: `Bearer ${token}` },
        });
        tokenInput.value = '';
        stopForm.hidden = true;
        stopButton.hidden = false;
        setStudy(d.study);
        renderAll();
      } catch (e) {
        if (!(e instanceof Redirecting)) stopError.textContent = errorText(e);
      } finally {
        confirmButton.disabled = false;
      }
    });

    function updateStopArea() {
      stopArea.hidden = !(session.can_stop && S.study && S.study.state === 'RUNNING');
    }

    // ----- chart a: optimization history

    function drawHistory(chart) {
      const canvas = chartCanvas(chart);
      const list = S.list;
      const pts = list.filter((t) => isNum(t.value));
      const w = widthOf(chart.el);
      const hgt = 300;
      const ctx = setupCanvas(canvas, w, hgt);
      if (!pts.length) {
        canvas.hits = null;
        canvasMessage(ctx, w, hgt, list.length ? 'No trial has a value yet' : 'No trials yet');
        return 0;
      }
      const box = plotBox(w, hgt, { l: 64, r: 16, t: 12, b: 40 });
      const maxN = Math.max(1, list[list.length - 1].number);
      const xs = linScale(-0.02 * maxN, maxN * 1.02, box.l, box.r, true);
      let lo = Infinity;
      let hi = -Infinity;
      for (const t of pts) { if (t.value < lo) lo = t.value; if (t.value > hi) hi = t.value; }
      const [y0, y1] = paddedDomain(lo, hi);
      const ys = linScale(y0, y1, box.b, box.t);
      drawAxes(ctx, box, xs, ys, { xTitle: 'trial', yTitle: metricName() });
      ctx.save();
      clipTo(ctx, box);
      const groups = { COMPLETED: [], PRUNED: [], other: [] };
      for (const t of pts) (groups[t.state] || groups.other).push([xs(t.number), ys(t.value)]);
      const r = dotRadius(pts.length);
      const alpha = pts.length > 2000 ? 0.6 : 0.85;
      fillDots(ctx, groups.other, COL.other, r, alpha);
      fillDots(ctx, groups.PRUNED, COL.pruned, r, alpha);
      fillDots(ctx, groups.COMPLETED, COL.completed, r, alpha);
      // best so far (completed trials), as a step line
      let best = null;
      ctx.beginPath();
      for (const t of list) {
        if (t.state !== 'COMPLETED' || !isNum(t.value)) continue;
        const x = xs(t.number);
        if (best === null) {
          best = t.value;
          ctx.moveTo(x, ys(best));
        } else if (better(t.value, best)) {
          ctx.lineTo(x, ys(best));
          best = t.value;
          ctx.lineTo(x, ys(best));
        }
      }
      if (best !== null) {
        ctx.lineTo(xs(maxN), ys(best));
        ctx.strokeStyle = COL.best;
        ctx.lineWidth = 1.8;
        ctx.stroke();
      }
      ctx.restore();
      canvas.hits = lazy(() => {
        const g = new HitGrid();
        for (const t of pts) {
          g.add(xs(t.number), ys(t.value), {
            label: () => `trial ${t.number} · ${t.state}\n${metricName()}: ${fmtValue(t.value)}${paramsLine(t)}`,
            href: trialPath(name, t.number),
          });
        }
        return g;
      });
      return 2;
    }

    function paramsLine(t) {
      const ps = S.params.filter((p) => p.kind !== 'fixed' || p.name === 'seed');
      const parts = [];
      for (const p of ps) {
        if (t.params && t.params[p.name] !== undefined) parts.push(`${p.name}=${fmtParam(t.params[p.name])}`);
        if (parts.length >= 8) break;
      }
      return parts.length ? `\n${parts.join('\n')}` : '';
    }

    // ----- chart b: learning curves

    function drawCurves(chart) {
      const canvas = chartCanvas(chart);
      let cands = S.list.filter((t) => Array.isArray(t.curve) && t.curve.length > 0);
      if (S.topK !== 'all') {
        const ranked = cands.filter((t) => t.state !== 'RUNNING' && isNum(t.value));
        ranked.sort((a, b) => (maximize() ? b.value - a.value : a.value - b.value));
        const keep = new Set(ranked.slice(0, S.topK));
        cands = cands.filter((t) => t.state === 'RUNNING' || keep.has(t));
      }
      const w = widthOf(chart.el);
      const hgt = 300;
      const ctx = setupCanvas(canvas, w, hgt);
      if (!cands.length) {
        canvas.hits = null;
        canvasMessage(ctx, w, hgt, 'No trial has reported an epoch yet');
        return 0;
      }
      const drawn = [];
      let e0 = Infinity;
      let e1 = S.maxEpochs != null ? S.maxEpochs : -Infinity;
      let lo = Infinity;
      let hi = -Infinity;
      for (const t of cands) {
        const pts = decimate(t.curve).filter((p) => Array.isArray(p) && isNum(p[0]) && isNum(p[1]));
        if (!pts.length) continue;
        for (const [e, v] of pts) {
          if (e < e0) e0 = e;
          if (e > e1) e1 = e;
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
        drawn.push({ t, pts });
      }
      if (!drawn.length) {
        canvas.hits = null;
        canvasMessage(ctx, w, hgt, 'No trial has reported an epoch yet');
        return 0;
      }
      e0 = Math.min(e0, 1);
      const box = plotBox(w, hgt, { l: 64, r: 16, t: 12, b: 40 });
      const xs = epochScale(e0, e1, box);
      const [y0, y1] = paddedDomain(lo, hi);
      const ys = linScale(y0, y1, box.b, box.t);
      drawAxes(ctx, box, xs, ys, { xTitle: 'epoch', yTitle: metricName() });
      ctx.save();
      clipTo(ctx, box);
      const n = drawn.length;
      const alpha = clamp(6 / Math.sqrt(n), 0.08, 0.85);
      const bestNum = S.study.best_trial;
      const stroke = (items, color, width, a, dash) => {
        if (!items.length) return;
        ctx.beginPath();
        for (const { pts } of items) {
          ctx.moveTo(xs(pts[0][0]), ys(pts[0][1]));
          if (pts.length === 1) ctx.lineTo(xs(pts[0][0]) + 0.01, ys(pts[0][1]));
          for (let i = 1; i < pts.length; i++) ctx.lineTo(xs(pts[i][0]), ys(pts[i][1]));
        }
        ctx.globalAlpha = a;
        ctx.strokeStyle = color;
        ctx.lineWidth = width;
        ctx.setLineDash(dash || []);
        ctx.stroke();
        ctx.setLineDash([]);
        ctx.globalAlpha = 1;
      };
      const by = { COMPLETED: [], PRUNED: [], RUNNING: [], other: [] };
      let bestItem = null;
      for (const d of drawn) {
        if (d.t.number === bestNum && d.t.state === 'COMPLETED') { bestItem = d; continue; }
        (by[d.t.state] || by.other).push(d);
      }
      stroke(by.other, COL.other, 1, alpha);
      stroke(by.PRUNED, COL.pruned, 1, alpha);
      stroke(by.COMPLETED, COL.completed, 1.2, alpha);
      // pruned: an × where the trial stopped
      if (by.PRUNED.length) {
        ctx.beginPath();
        for (const { pts } of by.PRUNED) {
          const [e, v] = pts[pts.length - 1];
          const x = xs(e);
          const y = ys(v);
          ctx.moveTo(x - 3, y - 3); ctx.lineTo(x + 3, y + 3);
          ctx.moveTo(x + 3, y - 3); ctx.lineTo(x - 3, y + 3);
        }
        ctx.globalAlpha = clamp(alpha * 1.5, 0.25, 1);
        ctx.strokeStyle = COL.pruned;
        ctx.lineWidth = 1.4;
        ctx.stroke();
        ctx.globalAlpha = 1;
      }
      if (bestItem) stroke([bestItem], COL.best, 2.4, 1);
      // running trials on top, dashed, with their latest point marked
      stroke(by.RUNNING, COL.running, 1.8, 0.95, [5, 3]);
      fillDots(ctx, by.RUNNING.map(({ pts }) => [xs(pts[pts.length - 1][0]), ys(pts[pts.length - 1][1])]), COL.running, 3);
      ctx.restore();
      canvas.hits = lazy(() => {
        const g = new HitGrid();
        for (const { t, pts } of drawn) {
          for (const [e, v] of pts) {
            g.add(xs(e), ys(v), {
              label: () => `trial ${t.number} · ${t.state}\nepoch ${fmtNum(e)}: ${fmtValue(v)}`,
              href: trialPath(name, t.number),
            });
          }
        }
        return g;
      });
      return n;
    }

    // ----- chart c: parallel coordinates

    function drawParallel(chart) {
      const canvas = chartCanvas(chart);
      const ps = searched();
      const tr = S.list.filter((t) => isNum(t.value));
      const w = widthOf(chart.el);
      const hgt = 360;
      const ctx = setupCanvas(canvas, w, hgt);
      canvas.hits = null;
      setKids(parallelLegend, h('span', { class: 'lg' }, 'worse', h('span', { class: 'sw sw-grad' }), 'better'),
        h('span', { class: 'lg' }, `colour: ${metricName()}`));
      if (!tr.length) {
        canvasMessage(ctx, w, hgt, 'No trial has a value yet');
        return 0;
      }
      const box = plotBox(w, hgt, { l: 58, r: 58, t: 40, b: 16 });
      const nAxes = ps.length + 1;
      const xAt = (i) => (nAxes === 1 ? (box.l + box.r) / 2 : box.l + (i * box.w) / (nAxes - 1));
      const scales = ps.map((p) => paramScale(p, tr, box.b, box.t));
      let lo = Infinity;
      let hi = -Infinity;
      for (const t of tr) { if (t.value < lo) lo = t.value; if (t.value > hi) hi = t.value; }
      const [v0, v1] = paddedDomain(lo, hi, 0.02);
      const vs = linScale(v0, v1, box.b, box.t);
      const span = hi - lo;
      const goodness = (v) => (span > 0 ? (maximize() ? (v - lo) / span : (hi - v) / span) : 1);
      // bucket polylines by colour: one path per bucket, worse first so the best end up on top
      const buckets = Array.from({ length: SCALE_LEVELS }, () => []);
      for (const t of tr) buckets[Math.round(goodness(t.value) * (SCALE_LEVELS - 1))].push(t);
      const alpha = clamp(8 / Math.sqrt(tr.length), 0.08, 0.85);
      ctx.save();
      clipTo(ctx, box, 6);
      ctx.lineWidth = tr.length > 2000 ? 0.8 : 1.2;
      ctx.globalAlpha = alpha;
      for (let b = 0; b < SCALE_LEVELS; b++) {
        const items = buckets[b];
        if (!items.length) continue;
        ctx.beginPath();
        for (const t of items) {
          let pen = false;
          for (let i = 0; i < ps.length; i++) {
            const v = t.params ? t.params[ps[i].name] : undefined;
            const y = v === undefined || v === null ? NaN : scales[i](v);
            if (!Number.isFinite(y)) { pen = false; continue; }
            if (pen) ctx.lineTo(xAt(i), y); else ctx.moveTo(xAt(i), y);
            pen = true;
          }
          const y = vs(t.value);
          if (pen) ctx.lineTo(xAt(ps.length), y);
          else { ctx.moveTo(xAt(ps.length) - 4, y); ctx.lineTo(xAt(ps.length) + 4, y); }
        }
        ctx.strokeStyle = SCALE_COLORS[b];
        ctx.stroke();
      }
      ctx.restore();
      // axes on top
      const spacing = nAxes > 1 ? box.w / (nAxes - 1) : box.w;
      const axis = (i, scale, title) => {
        const x = Math.round(xAt(i)) + 0.5;
        ctx.strokeStyle = '#6b7280';
        ctx.lineWidth = 1;
        vline(ctx, x, box.t, box.b);
        ctx.font = FONT_BOLD;
        ctx.fillStyle = COL.title;
        ctx.textAlign = i === 0 ? 'left' : i === nAxes - 1 ? 'right' : 'center';
        ctx.textBaseline = 'bottom';
        const tx = i === 0 ? Math.max(2, x - 20) : i === nAxes - 1 ? Math.min(w - 2, x + 20) : x;
        ctx.fillText(truncateText(ctx, title, Math.max(40, spacing - 8)), tx, box.t - 14);
        ctx.font = FONT;
        const ticks = scale.ticks(Math.max(2, Math.round(box.h / 40)));
        ctx.textAlign = 'right';
        ctx.textBaseline = 'middle';
        let lastY = Infinity;
        ticks.forEach((t) => {
          const y = scale(t.v);
          if (!Number.isFinite(y) || y < box.t - 1 || y > box.b + 1) return;
          if (lastY - y < 11) return;
          lastY = y;
          ctx.strokeStyle = '#6b7280';
          hline(ctx, x - 3, x, Math.round(y) + 0.5);
          const label = truncateText(ctx, t.label, Math.min(90, Math.max(30, spacing - 16)));
          if (i > 0) {
            // a light chip behind the label keeps it readable over dense lines
            const lw = ctx.measureText(label).width;
            ctx.fillStyle = 'rgba(255,255,255,0.88)';
            ctx.fillRect(x - 7 - lw, y - 7, lw + 4, 14);
          }
          ctx.fillStyle = COL.text;
          ctx.fillText(label, x - 5, y);
        });
      };
      ps.forEach((p, i) => axis(i, scales[i], p.log ? `${p.name} (log)` : p.name));
      axis(ps.length, vs, `${metricName()} ${maximize() ? '↑' : '↓'}`);
      // colour strip beside the objective axis
      const xo = xAt(ps.length) + 4;
      const grad = ctx.createLinearGradient(0, vs(maximize() ? lo : hi), 0, vs(maximize() ? hi : lo));
      SCALE_STOPS.forEach((c, i) => grad.addColorStop(i / (SCALE_STOPS.length - 1), `rgb(${c[0]},${c[1]},${c[2]})`));
      ctx.fillStyle = grad;
      const ya = vs(hi);
      const yb = vs(lo);
      ctx.fillRect(xo, Math.min(ya, yb), 6, Math.max(2, Math.abs(yb - ya)));
      return tr.length;
    }

    // ----- chart d: slices

    function drawSlices(chart) {
      const ps = searched();
      chart.msg.hidden = true;
      chart.canvas.hidden = true;
      chart.canvas.hits = null;
      if (!ps.length) {
        chartMessage(chart, 'This study searches no parameter (all are fixed).');
        return 0;
      }
      const minis = ensureMinis(chart.el, ps.map((p) => p.name));
      const tr = S.list.filter((t) => isNum(t.value));
      let lo = Infinity;
      let hi = -Infinity;
      for (const t of tr) { if (t.value < lo) lo = t.value; if (t.value > hi) hi = t.value; }
      const [y0, y1] = paddedDomain(lo, hi);
      const r = dotRadius(tr.length);
      ps.forEach((p, i) => {
        const { canvas, box: cell } = minis[i];
        const w = widthOf(cell, 280);
        const hgt = 210;
        const ctx = setupCanvas(canvas, w, hgt);
        const box = plotBox(w, hgt, { l: 56, r: 10, t: 8, b: 34 });
        const xs = paramScale(p, tr, box.l, box.r);
        const ys = linScale(y0, y1, box.b, box.t);
        drawAxes(ctx, box, xs, ys, { xTitle: p.log ? `${p.name} (log)` : p.name });
        if (!tr.length) {
          canvas.hits = null;
          canvasMessage(ctx, w, hgt, 'no values yet');
          return;
        }
        const jitter = xs.kind === 'cat' ? Math.min(xs.step * 0.3, 14) : 0;
        const pos = [];
        const comp = [];
        const pruned = [];
        for (const t of tr) {
          const v = t.params ? t.params[p.name] : undefined;
          if (v === undefined || v === null) continue;
          let x = xs(v);
          if (!Number.isFinite(x)) continue;
          if (jitter) x += ((((t.number * 2654435761) >>> 0) % 1000) / 1000 - 0.5) * 2 * jitter;
          const y = ys(t.value);
          pos.push([x, y, t]);
          (t.state === 'COMPLETED' ? comp : pruned).push([x, y]);
        }
        ctx.save();
        clipTo(ctx, box);
        fillDots(ctx, pruned, COL.pruned, r, 0.65);
        fillDots(ctx, comp, COL.completed, r, 0.75);
        ctx.restore();
        canvas.hits = lazy(() => {
          const g = new HitGrid();
          for (const [x, y, t] of pos) {
            g.add(x, y, {
              label: () => `trial ${t.number} · ${t.state}\n${p.name}=${fmtParam(t.params[p.name])}\n${metricName()}: ${fmtValue(t.value)}`,
              href: trialPath(name, t.number),
            });
          }
          return g;
        });
      });
      return ps.length;
    }

    // ----- chart e: importance

    function drawImportance(chart) {
      const st = S.importance;
      importanceNote.textContent = '';
      if (st.state === 'pending') { chartMessage(chart, 'Loading…'); return 0; }
      if (st.state === 'error') { chartMessage(chart, st.error, true); return 0; }
      const items = (Array.isArray(st.data.importances) ? st.data.importances : [])
        .filter((it) => it && it.name !== 'seed' && isNum(it.importance));
      if (isNum(st.data.trials_used)) importanceNote.textContent = `computed from ${st.data.trials_used} completed trials`;
      if (!items.length) { chartMessage(chart, 'No parameter importance to show.'); return 0; }
      const canvas = chartCanvas(chart);
      const w = widthOf(chart.el);
      const rowH = 26;
      const hgt = 14 + items.length * rowH + 30;
      const ctx = setupCanvas(canvas, w, hgt);
      ctx.font = FONT;
      let labelW = 60;
      for (const it of items) labelW = Math.max(labelW, ctx.measureText(String(it.name)).width);
      labelW = Math.min(Math.ceil(labelW) + 12, Math.round(w * 0.4));
      const box = plotBox(w, hgt, { l: labelW, r: 56, t: 10, b: 30 });
      let max = 0;
      for (const it of items) max = Math.max(max, it.importance + (isNum(it.stddev) ? it.stddev : 0));
      const xs = linScale(0, Math.max(max * 1.05, 1e-9), box.l, box.r);
      // grid and x ticks as percentages
      ctx.save();
      ctx.textAlign = 'center';
      ctx.textBaseline = 'top';
      for (const t of xs.ticks(Math.max(2, Math.round(box.w / 80)))) {
        const x = Math.round(xs(t.v)) + 0.5;
        if (x < box.l - 1 || x > box.r + 1) continue;
        ctx.strokeStyle = COL.grid;
        vline(ctx, x, box.t, box.b);
        ctx.fillStyle = COL.text;
        ctx.fillText(`${Number((t.v * 100).toPrecision(6))}%`, x, box.b + 6);
      }
      ctx.strokeStyle = COL.axis;
      vline(ctx, box.l + 0.5, box.t, box.b);
      ctx.restore();
      items.forEach((it, i) => {
        const yc = box.t + i * rowH + rowH / 2;
        const x1 = xs(Math.max(0, it.importance));
        ctx.fillStyle = COL.bar;
        ctx.fillRect(box.l + 1, yc - 8, Math.max(1, x1 - box.l - 1), 16);
        if (isNum(it.stddev) && it.stddev > 0) {
          const a = xs(Math.max(0, it.importance - it.stddev));
          const b = xs(it.importance + it.stddev);
          ctx.strokeStyle = '#1e3a8a';
          ctx.lineWidth = 1.2;
          hline(ctx, a, b, yc);
          vline(ctx, a, yc - 4, yc + 4);
          vline(ctx, b, yc - 4, yc + 4);
        }
        ctx.fillStyle = COL.title;
        ctx.textAlign = 'right';
        ctx.textBaseline = 'middle';
        ctx.fillText(truncateText(ctx, String(it.name), labelW - 10), box.l - 6, yc);
        ctx.fillStyle = COL.text;
        ctx.textAlign = 'left';
        const xe = isNum(it.stddev) ? xs(it.importance + it.stddev) : x1;
        ctx.fillText(`${(it.importance * 100).toFixed(1)}%`, Math.max(x1, xe) + 5, yc);
      });
      canvas.hits = () => ({
        nearest: (x, y) => {
          const i = Math.floor((y - box.t) / rowH);
          if (i < 0 || i >= items.length || x < 0) return null;
          const it = items[i];
          return {
            label: `${it.name}\nimportance ${(it.importance * 100).toFixed(1)}%` +
              (isNum(it.stddev) ? ` ± ${(it.stddev * 100).toFixed(1)}%` : ''),
          };
        },
      });
      return items.length;
    }

    // ----- chart f: seed spread

    function drawSeeds(chart) {
      const st = S.configs;
      seedsNote.textContent = '';
      if (st.state === 'pending') { chartMessage(chart, 'Loading…'); return 0; }
      if (st.state === 'error') { chartMessage(chart, st.error, true); return 0; }
      const all = Array.isArray(st.data.configurations) ? st.data.configurations : [];
      const cfgs = all.filter((c) => c && (isNum(c.mean) || (Array.isArray(c.points) && c.points.some((p) => p && isNum(p.value)))));
      if (!cfgs.length) { chartMessage(chart, 'No configuration has a completed value yet.'); return 0; }
      // label configurations by the parameters that vary between them
      const keys = new Set();
      for (const c of all) if (c && c.params) Object.keys(c.params).forEach((k) => keys.add(k));
      const varying = [];
      for (const k of keys) {
        if (k === 'seed') continue;
        const vals = new Set(all.map((c) => catKey(c.params ? c.params[k] : undefined)));
        if (vals.size > 1) varying.push(k);
      }
      const labelOf = (c) => {
        const ks = varying.length ? varying : Array.from(keys).filter((k) => k !== 'seed');
        const s = ks.map((k) => `${k}=${fmtParam(c.params ? c.params[k] : undefined)}`).join(', ');
        return s || 'configuration';
      };
      const n = cfgs.length;
      const canvas = chartCanvas(chart);
      const w = widthOf(chart.el);
      const plotH = clamp(n * 22, 60, 460);
      const hgt = plotH + 10 + 38;
      const ctx = setupCanvas(canvas, w, hgt);
      const rowH = plotH / n;
      const showLabels = rowH >= 11;
      ctx.font = FONT;
      let labelW = 40;
      if (showLabels) {
        for (const c of cfgs) labelW = Math.max(labelW, ctx.measureText(labelOf(c)).width);
        labelW = Math.min(Math.ceil(labelW) + 12, Math.round(w * 0.45));
      }
      const box = plotBox(w, hgt, { l: labelW, r: 16, t: 10, b: 38 });
      let lo = Infinity;
      let hi = -Infinity;
      const pointsOf = (c) => (Array.isArray(c.points) ? c.points.filter((p) => p && isNum(p.value)) : []);
      for (const c of cfgs) {
        for (const p of pointsOf(c)) {
          lo = Math.min(lo, p.value); hi = Math.max(hi, p.value);
          const ci = ciOf(p);
          if (ci) { lo = Math.min(lo, ci[0]); hi = Math.max(hi, ci[1]); }
        }
        if (isNum(c.mean)) {
          const sd = isNum(c.std) ? c.std : 0;
          lo = Math.min(lo, c.mean - sd);
          hi = Math.max(hi, c.mean + sd);
        }
      }
      const [x0, x1] = paddedDomain(lo, hi);
      const xs = linScale(x0, x1, box.l, box.r);
      // x axis + grid (no y ticks: rows are labelled instead)
      ctx.save();
      ctx.textAlign = 'center';
      ctx.textBaseline = 'top';
      let lastRight = -Infinity;
      for (const t of xs.ticks(Math.max(2, Math.round(box.w / 70)))) {
        const x = Math.round(xs(t.v)) + 0.5;
        if (x < box.l - 1 || x > box.r + 1) continue;
        ctx.strokeStyle = COL.grid;
        vline(ctx, x, box.t, box.b);
        const lw = ctx.measureText(t.label).width;
        if (x - lw / 2 > lastRight + 6) {
          ctx.fillStyle = COL.text;
          ctx.fillText(t.label, x, box.b + 6);
          lastRight = x + lw / 2;
        }
      }
      ctx.strokeStyle = COL.axis;
      hline(ctx, box.l, box.r, box.b + 0.5);
      vline(ctx, box.l + 0.5, box.t, box.b);
      ctx.fillStyle = COL.title;
      ctx.textBaseline = 'bottom';
      ctx.fillText(metricName(), (box.l + box.r) / 2, hgt - 2);
      ctx.restore();
      const hits = [];
      const r = rowH >= 10 ? 3 : rowH >= 4 ? 2 : 1.2;
      const dots = [];
      let tiedCount = 0;
      ctx.save();
      for (let i = 0; i < n; i++) {
        const c = cfgs[i];
        const yc = box.t + (i + 0.5) * rowH;
        const bandH = Math.max(1, Math.min(12, rowH * 0.6));
        // The server marks a configuration when any of its seeds' intervals overlaps the best
        // trial's (see overlaps_best in api.rs): intervals are per trial, never pooled.
        if (c.overlaps_best === true) {
          tiedCount += 1;
          ctx.fillStyle = COL.tied;
          ctx.fillRect(box.l + 1, yc - rowH / 2, box.w - 1, rowH);
        }
        ctx.strokeStyle = COL.ci;
        ctx.lineWidth = 1;
        for (const p of pointsOf(c)) {
          const ci = ciOf(p);
          if (!ci) continue;
          const x0c = xs(ci[0]);
          const x1c = xs(ci[1]);
          hline(ctx, x0c, x1c, Math.round(yc) + 0.5);
          if (rowH >= 8) { vline(ctx, Math.round(x0c) + 0.5, yc - 3, yc + 3); vline(ctx, Math.round(x1c) + 0.5, yc - 3, yc + 3); }
        }
        if (isNum(c.mean)) {
          const sd = isNum(c.std) ? c.std : 0;
          const a = xs(c.mean - sd);
          const b = xs(c.mean + sd);
          ctx.fillStyle = COL.band;
          ctx.fillRect(a, yc - bandH / 2, Math.max(1, b - a), bandH);
          ctx.fillStyle = '#1e3a8a';
          ctx.fillRect(xs(c.mean) - 1, yc - bandH / 2 - 1, 2, bandH + 2);
          hits.push([xs(c.mean), yc, c, null]);
        }
        for (const p of pointsOf(c)) {
          const x = xs(p.value);
          dots.push([x, yc]);
          hits.push([x, yc, c, p]);
        }
        if (showLabels) {
          ctx.fillStyle = c.overlaps_best === true ? COL.tiedText : COL.title;
          ctx.textAlign = 'right';
          ctx.textBaseline = 'middle';
          const mark = c.best === true ? '★ ' : c.overlaps_best === true ? '≈ ' : '';
          ctx.fillText(mark + truncateText(ctx, labelOf(c), labelW - 10 - ctx.measureText(mark).width), box.l - 6, yc);
        }
      }
      ctx.restore();
      fillDots(ctx, dots, COL.seed, r, 0.8);
      const standing = (c) => (c.best === true ? '\n★ holds the best trial'
        : c.overlaps_best === true ? "\n≈ a seed's 95% CI overlaps the best trial's: may be tied" : '');
      canvas.hits = lazy(() => {
        const g = new HitGrid();
        for (const [x, y, c, p] of hits) {
          if (p) {
            const ci = ciOf(p);
            g.add(x, y, {
              label: () => `trial ${p.trial}${p.seed !== undefined ? ` · seed ${fmtParam(p.seed)}` : ''}\n${metricName()}: ${fmtValue(p.value)}` +
                `${ci ? ` (95% CI ${fmtCi(ci)})` : ''}\n${labelOf(c)}${standing(c)}`,
              href: isNum(p.trial) ? trialPath(name, p.trial) : null,
            });
          } else {
            const k = pointsOf(c).length;
            g.add(x, y, {
              label: () => `${labelOf(c)}\nmean ${fmtValue(c.mean)}${isNum(c.std) ? ` ± ${fmtValue(c.std)}` : ''} (${k} seed${k === 1 ? '' : 's'})${standing(c)}`,
            });
          }
        }
        return g;
      });
      chart.el.setAttribute('data-overlapping', String(tiedCount));
      const without = all.length - n;
      seedsNote.textContent = `${n} configuration${n === 1 ? '' : 's'} with a completed value` +
        (without > 0 ? ` · ${without} without one yet` : '') + ' · ranked best mean first' +
        (tiedCount > 0 ? ` · ≈ ${tiedCount} whose seeds' 95% CIs (any one) overlap the best trial's: may be tied` : '');
      seedsNote.title = "Each interval is one trial's bootstrap over dev examples; a configuration is marked when any of its seeds' intervals overlaps the best trial's interval (intervals of different seeds are not pooled).";
      return n;
    }

    // ----- g: trial table (virtualised)

    function tableColumns() {
      const ps = S.params.filter((p) => p.kind !== 'fixed' || p.name === 'seed').map((p) => p.name);
      if (!ps.includes('seed') && S.list.some((t) => t.params && t.params.seed !== undefined)) ps.push('seed');
      return [
        { key: 'number', label: '#', num: true, get: (t) => t.number },
        { key: 'state', label: 'State', get: (t) => t.state },
        { key: 'value', label: 'Value', num: true, title: metricName(), get: (t) => (isNum(t.value) ? t.value : null) },
        // Once some trial has one: the objective's score on the held-out test set (shown only).
        ...(S.list.some((t) => isNum(t.test_value)) ? [{
          key: 'test',
          label: 'Test',
          num: true,
          title: `${testCounterpart(metricName()) || 'test score'}: ${HELD_OUT_NOTE}`,
          get: (t) => (isNum(t.test_value) ? t.test_value : null),
        }] : []),
        // Once some trial has one: the 95% bootstrap interval of the objective on the dev set.
        ...(S.list.some((t) => ciOf(t)) ? [{
          key: 'ci',
          label: '95% CI',
          num: true,
          title: `95% bootstrap confidence interval of ${metricName()} on the dev set (sorts by its low end); ≈ best: it overlaps the best trial's`,
          get: (t) => { const ci = ciOf(t); return ci ? ci[0] : null; },
        }] : []),
        ...ps.map((p) => ({ key: `p:${p}`, label: p, param: p, get: (t) => (t.params ? t.params[p] : undefined) })),
        { key: 'epochs', label: 'Epochs', num: true, get: (t) => (Array.isArray(t.curve) ? t.curve.length : 0) },
        { key: 'attempt', label: 'Attempt', num: true, get: (t) => t.attempt },
        { key: 'worker', label: 'Worker', get: (t) => t.worker || '' },
        { key: 'duration', label: 'Duration', num: true, get: (t) => trialDuration(t) },
        // Once some worker measured it: the most device memory an attempt held (0: not measured).
        ...(S.list.some((t) => t.peak_device_memory_bytes > 0) ? [{
          key: 'peak',
          label: 'Peak memory',
          num: true,
          title: 'the most device memory an attempt of the trial held',
          get: (t) => (t.peak_device_memory_bytes > 0 ? t.peak_device_memory_bytes : null),
        }] : []),
      ];
    }

    function renderHeadRow() {
      setKids(thead, h('tr', null, T.cols.map((c) => {
        const active = T.sortKey === c.key;
        const th = h('th', {
          class: c.num ? 'num' : null,
          'data-key': c.key,
          title: c.title || `sort by ${c.label}`,
          'aria-sort': active ? (T.sortDir > 0 ? 'ascending' : 'descending') : null,
        }, c.label, h('span', { class: 'arrow' }, active ? (T.sortDir > 0 ? '▲' : '▼') : ''));
        th.addEventListener('click', () => {
          if (T.sortKey === c.key) T.sortDir = -T.sortDir;
          else { T.sortKey = c.key; T.sortDir = 1; }
          renderHeadRow();
          refreshTable();
        });
        return th;
      })));
    }

    const searchText = new WeakMap();
    function haystack(t) {
      let s = searchText.get(t);
      if (s === undefined) {
        const parts = [t.worker || ''];
        if (t.params) for (const [k, v] of Object.entries(t.params)) parts.push(`${k}=${fmtParam(v)}`);
        s = parts.join(' ').toLowerCase();
        searchText.set(t, s);
      }
      return s;
    }

    function compareValues(a, b) {
      const na = a === undefined || a === null;
      const nb = b === undefined || b === null;
      if (na || nb) return na && nb ? 0 : na ? 1 : -1;
      if (typeof a === 'number' && typeof b === 'number') return a - b;
      if (typeof a === 'number') return -1;
      if (typeof b === 'number') return 1;
      return String(a).localeCompare(String(b));
    }

    function refreshTable() {
      const cols = tableColumns();
      const key = cols.map((c) => c.key).join('\u0000');
      if (key !== T.colsKey) {
        T.cols = cols;
        T.colsKey = key;
        if (!cols.some((c) => c.key === T.sortKey)) { T.sortKey = 'number'; T.sortDir = 1; }
        renderHeadRow();
      } else {
        T.cols = cols;
      }
      let rows = S.list;
      if (T.state) rows = rows.filter((t) => t.state === T.state);
      if (T.text) rows = rows.filter((t) => haystack(t).includes(T.text));
      const col = T.cols.find((c) => c.key === T.sortKey) || T.cols[0];
      if (col.key !== 'number' || T.sortDir !== 1) {
        const dir = T.sortDir;
        const keyed = rows.map((t) => [col.get(t), t]);
        keyed.sort((a, b) => {
          const an = a[0] === undefined || a[0] === null;
          const bn = b[0] === undefined || b[0] === null;
          if (an || bn) return an && bn ? a[1].number - b[1].number : an ? 1 : -1; // missing last either way
          return dir * compareValues(a[0], b[0]) || a[1].number - b[1].number;
        });
        rows = keyed.map((k) => k[1]);
      } else if (rows === S.list) {
        rows = rows.slice();
      }
      T.rows = rows;
      countText.textContent = `${rows.length} of ${S.list.length} trials`;
      renderTableWindow();
    }

    function spacer(px, span) {
      const td = h('td', { colspan: span });
      const tr = h('tr', { class: 'spacer', 'aria-hidden': 'true' }, td);
      tr.style.height = `${px}px`;
      td.style.height = `${px}px`;
      return tr;
    }

    function cell(t, c, tied) {
      const v = c.get(t);
      if (c.key === 'ci') return h('td', { class: 'num ci' }, tied ? tiedBadge() : null, tied ? ' ' : null, fmtCi(ciOf(t)));
      if (c.key === 'number') return h('td', { class: 'num' }, h('a', { href: trialPath(name, t.number) }, String(t.number)));
      if (c.key === 'state') return h('td', null, badge(t.state), t.error ? h('span', { class: 'muted', title: t.error }, ' ⚠') : null);
      if (c.key === 'value') return h('td', { class: 'num' }, fmtValue(v));
      if (c.key === 'test') return h('td', { class: 'num test' }, fmtValue(v));
      if (c.key === 'duration') return h('td', { class: 'num' }, fmtDuration(v));
      if (c.key === 'peak') return h('td', { class: 'num' }, v == null ? '—' : fmtSize(v));
      if (c.key === 'worker') return h('td', { class: 'mono', title: v }, v || '—');
      if (c.param) {
        const s = fmtParam(v);
        return h('td', { class: typeof v === 'number' ? 'num' : null, title: s }, s === '' ? '—' : s);
      }
      return h('td', { class: c.num ? 'num' : null }, v == null ? '—' : String(v));
    }

    function renderTableWindow() {
      const rows = T.rows;
      const span = Math.max(1, T.cols.length);
      if (!rows.length) {
        setKids(tbody, h('tr', { class: 'empty' }, h('td', { colspan: span },
          S.list.length ? 'No trial matches the filter.' : 'No trials yet.')));
        return;
      }
      const headH = thead.offsetHeight || 32;
      const viewH = scroller.clientHeight || 480;
      const top = Math.max(0, scroller.scrollTop - headH);
      const first = Math.max(0, Math.floor(top / ROW_H) - ROW_BUFFER);
      const last = Math.min(rows.length, Math.ceil((top + viewH) / ROW_H) + ROW_BUFFER);
      const bestNum = S.study ? S.study.best_trial : null;
      // Compared here rather than taken from the rows' overlaps_best: live events carry no
      // view of the best, and the best can change after any of them.
      const bestCi = bestNum != null ? ciOf(S.trials.get(bestNum)) : null;
      const frag = document.createDocumentFragment();
      if (first > 0) frag.append(spacer(first * ROW_H, span));
      for (let i = first; i < last; i++) {
        const t = rows[i];
        const isBest = t.number === bestNum;
        const tied = !isBest && ciOverlap(ciOf(t), bestCi);
        const tr = h('tr', {
          class: isBest ? 'row is-best' : tied ? 'row ties-best' : 'row',
          'data-trial': t.number,
          'data-overlaps-best': tied ? '1' : null,
          title: tied ? TIED_TITLE : null,
        });
        for (const c of T.cols) tr.append(cell(t, c, tied));
        frag.append(tr);
      }
      if (last < rows.length) frag.append(spacer((rows.length - last) * ROW_H, span));
      setKids(tbody, frag);
    }

    // ----- live updates

    function setLive(on) {
      setBodyAttr('data-live', on ? 1 : 0);
      const dot = headMain.querySelector('.live-dot');
      if (dot) {
        dot.className = on ? 'live-dot on' : 'live-dot';
        dot.title = on ? 'live updates on' : 'not live';
      }
    }

    function countEvent() {
      S.events += 1;
      setBodyAttr('data-events', S.events);
    }

    function closeEvents() {
      if (S.es) { S.es.close(); S.es = null; }
      setLive(false);
    }

    let resyncing = false;
    async function resync() {
      if (resyncing) return;
      resyncing = true;
      try {
        await loadAll();
        dirty.add('all');
        renderAll();
      } catch (e) {
        reportError(e);
      } finally {
        resyncing = false;
      }
      importanceFetch.request();
      configsFetch.request();
    }

    function openEvents() {
      closeEvents();
      S.es = studyEvents(name, {
        live: setLive,
        count: countEvent,
        reconnected: () => { if (S.loaded) resync(); },
        trial: (t) => {
          if (!t) return;
          upsert(t);
          importanceFetch.request();
          configsFetch.request();
          scheduleRender();
        },
        study: (st) => { if (st) { setStudy(st); scheduleRender(); } },
        resync: () => resync(),
        end: (st) => {
          if (st) setStudy(st);
          S.es = null;
          // The registry can be a change ahead of the stream: read the final state once more.
          if (S.loaded) resync();
        },
      });
    }

    // ----- start

    (async () => {
      // Events first, then the snapshot: a change committed while the pages load arrives as
      // an event, and `upsert` keeps whichever of the two is newer (by `rev`).
      openEvents();
      try {
        await loadAll();
      } catch (e) {
        reportError(e);
        setKids(app, h('nav', { class: 'crumbs' }, h('a', { href: '/' }, 'Studies'), h('span', { class: 'sep' }, '/'), h('span', { class: 'here' }, name)),
          h('div', { class: 'card' }, h('p', { class: 'chart-msg' }, `Could not load study ${name}: ${errorText(e)}`)));
        markReady();
        return;
      }
      renderAll();
      const firstFetches = [importanceFetch.now(), configsFetch.now()];
      loadSession().then(() => updateStopArea());
      await Promise.allSettled(firstFetches);
      dirty.add('all');
      renderAll();
      markReady();
    })().catch((e) => { reportError(e); markReady(); });
  }

  // ================================================================ trial page

  function trialPage(app, name, number) {
    document.title = `Trial ${number} · ${name} · bertsweep`;
    const P = { study: null, params: [], maxEpochs: null, detail: null, es: null, events: 0 };
    setBodyAttr('data-events', 0);
    setBodyAttr('data-live', 0);

    const head = h('div', { class: 'head-main' }, h('p', { class: 'loading' }, 'Loading trial…'));
    const metricsChart = makeChart('metrics');
    const body = h('div');
    setKids(app,
      h('nav', { class: 'crumbs' },
        h('a', { href: '/' }, 'studies'), h('span', { class: 'sep' }, '/'),
        h('a', { href: studyPath(name) }, name), h('span', { class: 'sep' }, '/'),
        h('span', { class: 'here' }, `trial ${number}`)),
      h('section', { class: 'card study-head' }, head),
      h('section', { class: 'panel wide', id: 'panel-metrics' },
        h('div', { class: 'panel-head' }, h('h2', null, 'Metrics per epoch')),
        metricsChart.el),
      body,
    );

    const objective = () => (P.study && P.study.objective) || { metric: 'value', direction: 'maximize' };

    function metricNames(d) {
      const names = new Set();
      for (const ep of d.epochs || []) {
        if (!ep || !ep.metrics) continue;
        for (const [k, v] of Object.entries(ep.metrics)) if (k !== 'epoch' && isNum(v)) names.add(k);
      }
      const obj = objective().metric;
      const rank = (k) => (k === obj ? 0 : k.startsWith('eval_') ? 1 : k.startsWith('train_') ? 2 : 3);
      return Array.from(names).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
    }

    function kvRow(k, v) {
      return h('tr', null, h('th', null, k), h('td', null, v));
    }

    function renderTrial() {
      const d = P.detail;
      if (!d) return;
      const obj = objective();
      const isBest = P.study && P.study.best_trial === d.number;
      setKids(head,
        h('div', { class: 'title-row' }, h('h1', null, `Trial ${d.number}`), badge(d.state),
          isBest ? h('span', { class: 'badge best' }, 'best') : null),
        h('div', { class: 'subtitle' }, `${obj.metric}: `, h('b', null, fmtValue(d.value)),
          ciOf(d) ? h('span', { id: 'trial-ci', title: `95% bootstrap confidence interval of ${obj.metric} on the dev set` },
            ` (95% CI ${fmtCi(ciOf(d))})`) : null,
          d.overlaps_best === true ? [' ', tiedBadge(`this trial's interval overlaps the best trial's (trial ${P.study ? P.study.best_trial : '?'}): may be tied`)] : null,
          isNum(d.test_value)
            ? [' · ', h('span', { id: 'trial-test-value', title: `${testCounterpart(obj.metric)}: ${HELD_OUT_NOTE}` },
              `${testCounterpart(obj.metric)}: `, h('b', null, fmtValue(d.test_value)))]
            : null,
          ` · study `, h('a', { href: studyPath(name) }, name)),
        h('dl', { class: 'stats' },
          h('div', { class: 'stat' }, h('dt', null, 'Attempt'), h('dd', null, String(d.attempt == null ? '—' : d.attempt))),
          h('div', { class: 'stat' }, h('dt', null, 'Worker'), h('dd', { class: 'mono' }, d.worker || '—')),
          h('div', { class: 'stat' }, h('dt', null, 'Created'), h('dd', null, fmtTime(d.created_ms))),
          h('div', { class: 'stat' }, h('dt', null, 'Started'), h('dd', null, fmtTime(d.started_ms))),
          h('div', { class: 'stat' }, h('dt', null, 'Finished'), h('dd', null, fmtTime(d.finished_ms))),
          h('div', { class: 'stat' }, h('dt', null, 'Duration'), h('dd', null, fmtDuration(trialDuration(d)))),
          d.peak_device_memory_bytes > 0
            ? h('div', { class: 'stat', id: 'trial-peak-memory' }, h('dt', null, 'Peak memory'), h('dd', { title: `${d.peak_device_memory_bytes} bytes` }, fmtSize(d.peak_device_memory_bytes))) : null,
          d.state === 'RUNNING' && isNum(d.lease_expires_ms)
            ? h('div', { class: 'stat' }, h('dt', null, 'Lease expires'), h('dd', null, fmtTime(d.lease_expires_ms))) : null),
        d.error ? h('pre', { class: 'error-text', id: 'trial-error' }, d.error) : null,
      );

      drawChart(metricsChart, drawMetrics);

      // params + final metrics
      const kinds = new Map(P.params.map((p) => [p.name, p]));
      const paramRows = Object.entries(d.params || {}).map(([k, v]) => {
        const p = kinds.get(k);
        return h('tr', null, h('th', null, k), h('td', null, fmtParam(v)),
          h('td', { class: 'muted' }, p ? (p.kind === 'range' ? `range${p.log ? ', log' : ''}${p.integer ? ', int' : ''}` : p.kind) : ''));
      });
      const finals = Object.entries(d.metrics || {});
      const sections = [
        h('div', { class: 'trial-grid' },
          h('section', { class: 'panel' }, h('h2', { class: 'section-title' }, 'Parameters'),
            paramRows.length ? h('table', { class: 'kv', id: 'params-table' }, h('tbody', null, paramRows)) : h('p', { class: 'muted' }, 'No parameters.')),
          h('section', { class: 'panel' }, h('h2', { class: 'section-title' }, 'Final metrics'),
            finals.length
              ? h('table', { class: 'kv', id: 'final-metrics' }, h('tbody', null, finals.map(([k, v]) => kvRow(k, isNum(v) ? fmtNum(v) : fmtParam(v)))))
              : h('p', { class: 'muted' }, d.state === 'RUNNING' ? 'Still training.' : 'No final metrics.'))),
      ];

      const devTest = devTestSection(d, obj);
      if (devTest) sections.push(devTest);

      const evaluation = evaluationSection(d, obj);
      if (evaluation) sections.push(evaluation);

      // metrics per epoch table
      const names = metricNames(d);
      const epochs = Array.isArray(d.epochs) ? d.epochs : [];
      sections.push(h('section', { class: 'panel wide', id: 'epochs-panel' },
        h('h2', { class: 'section-title' }, 'Epochs'),
        epochs.length
          ? h('div', { class: 'table-wrap' }, h('table', { class: 'grid', id: 'epochs-table' },
            h('thead', null, h('tr', null, h('th', { class: 'num' }, 'epoch'), names.map((n) => h('th', { class: 'num' }, n)))),
            h('tbody', null, epochs.map((ep) => h('tr', { 'data-epoch': ep.epoch },
              h('td', { class: 'num' }, fmtNum(ep.epoch)),
              names.map((n) => h('td', { class: 'num' }, ep.metrics && ep.metrics[n] !== undefined ? fmtNum(ep.metrics[n]) : '—')))))))
          : h('p', { class: 'muted' }, 'No epoch reported yet.')));

      // earlier attempts
      const earlier = Array.isArray(d.earlier_attempts) ? d.earlier_attempts : [];
      if (earlier.length) {
        const enames = new Set();
        for (const a of earlier) for (const k of Object.keys(a.metrics || {})) enames.add(k);
        const en = Array.from(enames).sort();
        sections.push(h('section', { class: 'panel wide', id: 'attempts-panel' },
          h('h2', { class: 'section-title' }, 'Earlier attempts'),
          h('div', { class: 'table-wrap' }, h('table', { class: 'grid', id: 'attempts-table' },
            h('thead', null, h('tr', null, h('th', { class: 'num' }, 'attempt'), h('th', { class: 'num' }, 'epoch'), en.map((n) => h('th', { class: 'num' }, n)))),
            h('tbody', null, earlier.map((a) => h('tr', null,
              h('td', { class: 'num' }, fmtNum(a.attempt)), h('td', { class: 'num' }, fmtNum(a.epoch)),
              en.map((n) => h('td', { class: 'num' }, a.metrics && a.metrics[n] !== undefined ? fmtNum(a.metrics[n]) : '—')))))))));
      }

      // model
      let model;
      if (Array.isArray(d.model_files)) {
        const total = d.model_files.reduce((sum, f) => sum + (isNum(f.size) ? f.size : 0), 0);
        model = d.model_files.length
          ? h('div', null,
            d.model_tar_url
              ? h('p', null, h('a', { href: d.model_tar_url, id: 'model-tar' }, 'Download the whole model (.tar)'),
                h('span', { class: 'size' }, ` ${fmtSize(total)}, unpack with tar -xf, load with from_pretrained`))
              : null,
            h('ul', { class: 'files', id: 'model-files' }, d.model_files.map((f) => h('li', null,
              h('a', { href: f.url, download: String(f.path).split('/').pop() }, f.path),
              h('span', { class: 'size' }, fmtSize(f.size))))))
          : h('p', { class: 'muted' }, 'The model has no files.');
      } else if (!d.artifact) {
        model = h('p', { class: 'muted', id: 'model-none' },
          d.state === 'RUNNING' || d.state === 'PENDING' ? 'no model yet (the trial has not finished)' : 'no model kept');
      } else {
        model = h('div', { id: 'model-artifact' },
          h('div', null, 'Artifact: ', h('code', null, d.artifact)),
          h('div', { class: 'muted small' }, 'The coordinator does not hold this model; download it with:'),
          h('code', { class: 'cmd' }, `bertsweep download ${shellQuote(name)} --trial ${d.number} DIR`));
      }
      sections.push(h('section', { class: 'panel wide', id: 'model-panel' }, h('h2', { class: 'section-title' }, 'Model'), model));

      setKids(body, ...sections);
    }

    /**
     * Dev and held-out test scores side by side, one row per metric scored on both (`eval_X`
     * and `test_X`), with the gap dev − test: the selection optimism of the dev score, which
     * was the best of many on that same set (null: the trial has no test scores).
     */
    function devTestSection(d, obj) {
      const test = d.test_metrics && typeof d.test_metrics === 'object' ? d.test_metrics : null;
      if (!test || !Object.keys(test).length) return null;
      const dev = d.metrics && typeof d.metrics === 'object' ? d.metrics : {};
      const pairs = Object.keys(dev)
        .filter((k) => isNum(dev[k]) && isNum(test[testCounterpart(k)]))
        .map((k) => ({ key: k, name: k.slice('eval_'.length), dev: dev[k], test: test[testCounterpart(k)] }))
        .sort((a, b) => a.name.localeCompare(b.name));
      const gapTitle = 'selection optimism: how much better the dev score looks than the same model scores on data the search never saw (positive for scores, negative for losses)';
      const table = pairs.length
        ? h('div', { class: 'table-wrap' }, h('table', { class: 'grid dev-test', id: 'trial-dev-test' },
          h('caption', null, 'Dev vs held-out test; the last column is the selection optimism (dev − test)'),
          h('thead', null, h('tr', null, h('th', null, 'metric'), h('th', { class: 'num' }, 'dev'), h('th', { class: 'num' }, 'test'),
            h('th', { class: 'num', title: gapTitle }, 'selection optimism (dev − test)'))),
          h('tbody', null, pairs.map((p) => h('tr', { 'data-metric': p.name, class: p.key === obj.metric ? 'objective' : null },
            h('td', { class: 'metric-name' }, p.name),
            h('td', { class: 'num' }, p.dev.toFixed(4)),
            h('td', { class: 'num' }, p.test.toFixed(4)),
            h('td', { class: 'num gap' }, fmtGap(p.dev - p.test)))))))
        : h('table', { class: 'kv', id: 'trial-test-only' }, h('tbody', null,
          Object.entries(test).map(([k, v]) => kvRow(k, isNum(v) ? fmtNum(v) : fmtParam(v)))));
      return h('section', { class: 'panel wide', id: 'dev-test-panel' },
        h('h2', { class: 'section-title' }, 'Dev vs held-out test'),
        h('p', { class: 'muted small', id: 'trial-dev-test-note' }, HELD_OUT_NOTE),
        pairs.length ? null : h('p', { class: 'muted small' }, 'No test score has a dev counterpart (eval_…) among the final metrics.'),
        table);
    }

    /** The dev-set evaluation: per-class scores and the confusion matrix (null: nothing to show). */
    function evaluationSection(d, obj) {
      const e = d.evaluation && typeof d.evaluation === 'object' ? d.evaluation : null;
      if (!e) {
        if (d.state !== 'COMPLETED') return null;
        return h('section', { class: 'panel wide', id: 'evaluation-panel' },
          h('h2', { class: 'section-title' }, 'Dev-set evaluation'),
          h('p', { class: 'muted', id: 'evaluation-none' },
            'No dev-set predictions: the worker sent none (it predates them, or the dev set was over the size limit).'));
      }
      const ci = ciOf(e);
      const facts = [
        isNum(e.epoch) ? `epoch ${e.epoch}` : null,
        isNum(e.examples) ? `${e.examples} examples` : null,
        isNum(e.class_count) ? `${e.class_count} classes` : null,
        ci ? `95% CI of ${obj.metric}: ${fmtCi(ci)}` : `no interval (${obj.metric} is undefined on most resamples)`,
      ].filter((x) => x != null).join(' · ');
      const perClass = Array.isArray(e.per_class) ? e.per_class : [];
      const classTable = perClass.length
        ? h('div', { class: 'table-wrap' }, h('table', { class: 'grid', id: 'trial-per-class' },
          h('thead', null, h('tr', null, h('th', null, 'class'), ['precision', 'recall', 'F1', 'support'].map((k) => h('th', { class: 'num' }, k)))),
          h('tbody', null, perClass.map((c, k) => h('tr', { 'data-class': k },
            h('td', { class: 'class-name' }, c && c.name != null ? String(c.name) : String(k)),
            [c.precision, c.recall, c.f1].map((v) => h('td', { class: 'num' }, isNum(v) ? v.toFixed(4) : '—')),
            h('td', { class: 'num' }, isNum(c.support) ? String(c.support) : '—'))))))
        : h('p', { class: 'muted' }, 'Per-class scores are shown for up to 64 classes.');
      return h('section', { class: 'panel wide', id: 'evaluation-panel' },
        h('h2', { class: 'section-title' }, 'Dev-set evaluation'),
        h('p', { class: 'muted small', id: 'evaluation-facts' }, facts),
        h('div', { class: 'eval-grid' },
          h('div', null, h('h3', { class: 'sub-title' }, 'Per class'), classTable),
          h('div', null, h('h3', { class: 'sub-title' }, 'Confusion matrix'), confusionTable(e.confusion))));
    }

    /** Rows: true class; columns: predicted; each cell shaded by its share of the row. */
    function confusionTable(cm) {
      const names = cm && Array.isArray(cm.classes) ? cm.classes.map((c) => String(c)) : [];
      const matrix = cm && Array.isArray(cm.matrix) ? cm.matrix : [];
      if (!names.length || matrix.length !== names.length) {
        return h('p', { class: 'muted' }, 'The confusion matrix is shown for up to 32 classes.');
      }
      const rows = matrix.map((row, i) => {
        const counts = Array.isArray(row) ? row.map((v) => (isNum(v) ? v : 0)) : [];
        const total = counts.reduce((a, b) => a + b, 0);
        return h('tr', { 'data-true': i },
          h('th', { class: 'class-name', scope: 'row', title: `true ${names[i]}` }, names[i]),
          names.map((pred, j) => {
            const count = counts[j] || 0;
            const share = total > 0 ? count / total : 0;
            const td = h('td', {
              class: i === j ? 'num cm-cell diag' : 'num cm-cell',
              'data-true': i,
              'data-predicted': j,
              title: `${count} of ${total} ${names[i]} examples predicted ${pred} (${(100 * share).toFixed(1)}%)`,
            }, String(count));
            td.style.backgroundColor = `rgba(29, 78, 216, ${(0.85 * share).toFixed(3)})`;
            if (share > 0.5) td.classList.add('dark');
            return td;
          }),
          h('td', { class: 'num muted' }, String(total)));
      });
      return h('div', { class: 'table-wrap' }, h('table', { class: 'grid confusion', id: 'trial-confusion' },
        h('thead', null, h('tr', null, h('th', { class: 'corner', title: 'rows: true class · columns: predicted class' }, 'true ↓ · predicted →'),
          names.map((n) => h('th', { class: 'num class-name', scope: 'col', title: `predicted ${n}` }, n)),
          h('th', { class: 'num' }, 'total'))),
        h('tbody', null, rows)));
    }

    function drawMetrics(chart) {
      const d = P.detail;
      const names = metricNames(d);
      chart.canvas.hidden = true;
      chart.canvas.hits = null;
      chart.msg.hidden = true;
      if (!names.length) {
        chartMessage(chart, d.state === 'RUNNING' || d.state === 'PENDING' ? 'No epoch reported yet.' : 'No metrics were reported.');
        return 0;
      }
      const minis = ensureMinis(chart.el, names);
      const epochs = (Array.isArray(d.epochs) ? d.epochs : []).filter((ep) => ep && isNum(ep.epoch) && ep.metrics);
      let e0 = 1;
      const own = d.params ? d.params.num_train_epochs : undefined;
      let e1 = isNum(own) ? own : P.maxEpochs != null ? P.maxEpochs : 1;
      for (const ep of epochs) { e0 = Math.min(e0, ep.epoch); e1 = Math.max(e1, ep.epoch); }
      const obj = objective().metric;
      names.forEach((metric, i) => {
        const { canvas, box: cell } = minis[i];
        const pts = epochs.filter((ep) => isNum(ep.metrics[metric])).map((ep) => [ep.epoch, ep.metrics[metric]]);
        const w = widthOf(cell, 280);
        const hgt = 190;
        const ctx = setupCanvas(canvas, w, hgt);
        const box = plotBox(w, hgt, { l: 58, r: 10, t: 8, b: 34 });
        let lo = Infinity;
        let hi = -Infinity;
        for (const [, v] of pts) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
        const [y0, y1] = paddedDomain(lo, hi, 0.08);
        const xs = epochScale(e0, e1, box);
        const ys = linScale(y0, y1, box.b, box.t);
        drawAxes(ctx, box, xs, ys, { xTitle: 'epoch' });
        const color = metric === obj ? COL.best : metric.startsWith('eval_') ? COL.running : COL.pruned;
        const sp = pts.map(([e, v]) => [xs(e), ys(v)]);
        if (sp.length) {
          ctx.beginPath();
          ctx.moveTo(sp[0][0], sp[0][1]);
          for (let k = 1; k < sp.length; k++) ctx.lineTo(sp[k][0], sp[k][1]);
          ctx.strokeStyle = color;
          ctx.lineWidth = 1.8;
          ctx.setLineDash(d.state === 'RUNNING' ? [5, 3] : []);
          ctx.stroke();
          ctx.setLineDash([]);
          fillDots(ctx, sp, color, 3);
        }
        canvas.hits = lazy(() => {
          const g = new HitGrid();
          pts.forEach(([e, v], k) => g.add(sp[k][0], sp[k][1], { label: `${metric}\nepoch ${fmtNum(e)}: ${fmtNum(v)}` }));
          return g;
        });
      });
      return names.length;
    }

    async function loadStudy() {
      const s = await api(apiStudy(name));
      P.study = s.study || null;
      P.params = Array.isArray(s.parameters) ? s.parameters : [];
      P.maxEpochs = isNum(s.max_epochs) ? s.max_epochs : null;
    }

    async function loadDetail() {
      P.detail = await api(`${apiStudy(name)}/trials/${number}`);
    }

    const detailFetch = throttled(TRIAL_DETAIL_MS, async () => {
      await loadDetail();
      renderTrial();
    });

    function setLive(on) { setBodyAttr('data-live', on ? 1 : 0); }
    function countEvent() {
      P.events += 1;
      setBodyAttr('data-events', P.events);
    }
    function openEvents() {
      P.es = studyEvents(name, {
        live: setLive,
        count: countEvent,
        reconnected: () => detailFetch.request(),
        trial: (t) => { if (t && t.number === number) detailFetch.request(); },
        study: (st) => {
          if (!st || st.name === undefined) return;
          const bestChanged = !P.study || P.study.best_trial !== st.best_trial;
          P.study = st;
          if (bestChanged) {
            renderTrial();
            detailFetch.request(); // overlaps_best is against the new best
          }
        },
        resync: () => detailFetch.request(),
        end: (st) => {
          if (st && st.name !== undefined) P.study = st;
          P.es = null;
          detailFetch.request();
        },
      });
    }

    window.addEventListener('resize', () => {
      if (P.detail) drawChart(metricsChart, drawMetrics);
    });

    (async () => {
      try {
        await Promise.all([loadStudy(), loadDetail()]);
      } catch (e) {
        reportError(e);
        setKids(head, h('p', { class: 'muted' }, `Could not load trial ${number} of ${name}.`));
        markReady();
        return;
      }
      renderTrial();
      openEvents();
      markReady();
    })().catch((e) => { reportError(e); markReady(); });
  }

  // ---------------------------------------------------------------- go

  function start() {
    try {
      route();
    } catch (e) {
      reportError(e, 'internal error');
      markReady();
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
