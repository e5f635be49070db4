// bertsweep dashboard: scales (linear, log, categorical, one per search parameter), axes with
// their ticks and titles, and the drawing primitives the charts share (lines, dots, clipping,
// curve decimation).

import { isNum, clamp, expo, fmtNum, fmtParam } from './format.js';
import { COL, FONT } from './theme.js';
import { truncateText } from './chart.js';

const MAX_CURVE_POINTS = 200; // curves longer than this are decimated when drawn

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
export function linScale(d0, d1, r0, r1, integer = false) {
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

export const catKey = (v) => (v !== null && typeof v === 'object' ? `j${JSON.stringify(v)}` : `s${String(v)}`);

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
export function paramScale(p, trials, r0, r1) {
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
export function epochScale(e0, e1, box) {
  const hi = Math.max(e1, e0 + 1);
  const pad = Math.max(0.15, (hi - e0) * 0.02);
  return linScale(e0 - pad, hi + pad, box.l, box.r, true);
}

export function paddedDomain(lo, hi, frac = 0.05) {
  if (!(lo <= hi)) return [0, 1];
  if (lo === hi) {
    const pad = Math.abs(lo) * 0.05 || 0.5;
    return [lo - pad, hi + pad];
  }
  const pad = (hi - lo) * frac;
  return [lo - pad, hi + pad];
}

export function hline(ctx, x0, x1, y) {
  ctx.beginPath();
  ctx.moveTo(x0, y);
  ctx.lineTo(x1, y);
  ctx.stroke();
}

export function vline(ctx, x, y0, y1) {
  ctx.beginPath();
  ctx.moveTo(x, y0);
  ctx.lineTo(x, y1);
  ctx.stroke();
}

/** Grid, tick labels, axis lines and titles of an x/y plot. Data is drawn afterwards. */
export function drawAxes(ctx, box, xs, ys, o = {}) {
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

export function clipTo(ctx, box, pad = 4) {
  ctx.beginPath();
  ctx.rect(box.l - pad, box.t - pad, box.w + 2 * pad, box.h + 2 * pad);
  ctx.clip();
}

/** Filled dots for many points at once: one path per call. */
export function fillDots(ctx, pts, color, r, alpha = 1) {
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

export function dotRadius(n) {
  return n > 5000 ? 1.5 : n > 1000 ? 2 : n > 200 ? 2.6 : 3.2;
}

export function decimate(curve) {
  if (curve.length <= MAX_CURVE_POINTS) return curve;
  const step = Math.ceil(curve.length / MAX_CURVE_POINTS);
  const out = [];
  for (let i = 0; i < curve.length; i += step) out.push(curve[i]);
  if (out[out.length - 1] !== curve[curve.length - 1]) out.push(curve[curve.length - 1]);
  return out;
}
