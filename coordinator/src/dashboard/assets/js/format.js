// bertsweep dashboard: formatting values for display (objective values, parameters, times,
// durations, sizes, confidence intervals) and the dashboard's page paths. Pure functions, no DOM.

/** The trial states the coordinator reports, in the order the state filter lists them. */
export const STATES = ['RUNNING', 'COMPLETED', 'PRUNED', 'FAILED', 'PENDING', 'PAUSED', 'STOPPED'];

export const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
export function clamp(v, lo, hi) { return Math.max(lo, Math.min(hi, v)); }
export const enc = encodeURIComponent;
export const studyPath = (name) => `/studies/${enc(name)}`;
export const trialPath = (name, n) => `/studies/${enc(name)}/trials/${enc(String(n))}`;

export function expo(v, digits) {
  return Number(v.toPrecision(digits)).toExponential().replace('e+', 'e');
}

/** Objective values: 4 decimals; exponential for tiny or huge magnitudes. */
export function fmtValue(v) {
  if (v == null) return '—';
  if (!isNum(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e7)) return expo(v, 4);
  return v.toFixed(4);
}

/** Parameter values: integers as they are, learning rates like 2e-5, strings as they are. */
export function fmtParam(v) {
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
export function fmtNum(v) {
  if (!isNum(v)) return v == null ? '—' : String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e7)) return expo(v, 4);
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(5)));
}

const pad2 = (n) => String(n).padStart(2, '0');

/** Local time as "2026-11-27 20:39:20". */
export function fmtTime(ms) {
  if (!isNum(ms)) return '—';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

export function fmtClock(ms) {
  const d = new Date(ms);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/** Durations as "45s", "3m 12s", "2h 5m", "1d 4h". */
export function fmtDuration(ms) {
  if (!isNum(ms) || ms < 0) return '—';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const hr = Math.floor(m / 60);
  if (hr < 24) return `${hr}h ${m % 60}m`;
  return `${Math.floor(hr / 24)}d ${hr % 24}h`;
}

export function fmtSize(bytes) {
  if (!isNum(bytes) || bytes < 0) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = bytes;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return i === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

/** A `[low, high]` interval from the server, or null when it is missing or malformed. */
export function ciOf(x) {
  const ci = x ? x.ci : null;
  return Array.isArray(ci) && ci.length === 2 && isNum(ci[0]) && isNum(ci[1]) ? ci : null;
}

export function fmtCi(ci) {
  return ci ? `${fmtValue(ci[0])} – ${fmtValue(ci[1])}` : '—';
}

/** Whether two intervals share a point (as the server's Interval::overlaps). */
export function ciOverlap(a, b) {
  return !!(a && b && a[0] <= b[1] && b[0] <= a[1]);
}

export const TIED_TITLE = "interval overlaps the best's: may be tied";

/** The test-set name of dev metric `metric` (`eval_X` -> `test_X`), or null. */
export function testCounterpart(metric) {
  return typeof metric === 'string' && metric.startsWith('eval_') ? `test_${metric.slice(5)}` : null;
}

/** A dev − test gap with its sign (ASCII, like the CLI's `{:+.4}`). */
export function fmtGap(v) {
  if (!isNum(v)) return '—';
  return `${v < 0 ? '-' : '+'}${Math.abs(v).toFixed(4)}`;
}

export const HELD_OUT_NOTE = 'scored once on the held-out test set; never used to choose';

export function trialDuration(t) {
  if (!t || !isNum(t.started_ms)) return null;
  const end = isNum(t.finished_ms) ? t.finished_ms : (t.state === 'RUNNING' ? Date.now() : null);
  return end == null ? null : Math.max(0, end - t.started_ms);
}

export function shellQuote(s) {
  return /^[A-Za-z0-9._\-/:=+@%]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}
