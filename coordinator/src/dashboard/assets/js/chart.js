// bertsweep dashboard: the plumbing every chart kind shares. Canvases sized for the device pixel
// ratio, hover targets with their tooltip and click-through, small multiples, legends, and the
// chart container with its message line and the data-series count the browser tests read.

import { h } from './dom.js';
import { errorText } from './api.js';
import { FONT, FONT_MSG } from './theme.js';

/** Sizes a canvas for the device pixel ratio and returns a context in CSS pixels. */
export function setupCanvas(canvas, w, hgt) {
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

export function widthOf(el, fallback = 600) {
  const w = Math.floor(el.clientWidth);
  return w > 40 ? w : fallback;
}

export function plotBox(w, hgt, m) {
  return { l: m.l, t: m.t, r: w - m.r, b: hgt - m.b, w: w - m.l - m.r, h: hgt - m.t - m.b, W: w, H: hgt };
}

export function canvasMessage(ctx, w, hgt, text) {
  ctx.save();
  ctx.font = FONT_MSG;
  ctx.fillStyle = '#9ca3af';
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  ctx.fillText(text, w / 2, hgt / 2);
  ctx.restore();
}

export function truncateText(ctx, text, maxW) {
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
export class HitGrid {
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
export function lazy(build) {
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

export function legend(items) {
  return h('div', { class: 'legend' }, items.map(([cls, label]) =>
    h('span', { class: 'lg' }, h('span', { class: `sw ${cls}` }), label)));
}

/** Small multiples: one titled canvas per name, reused while the names stay the same. */
export function ensureMinis(host, names) {
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
export function makeChart(id) {
  const el = h('div', { class: 'chart', 'data-chart': id, 'data-series': '0' });
  const canvas = h('canvas');
  const msg = h('div', { class: 'chart-msg', hidden: true });
  el.append(canvas, msg);
  attachHover(canvas, el);
  return { id, el, canvas, msg };
}

export function chartMessage(chart, text, isError) {
  chart.canvas.hidden = true;
  chart.canvas.hits = null;
  if (chart.el.miniGrid) { chart.el.miniGrid.remove(); chart.el.miniGrid = null; chart.el.miniKey = null; }
  chart.msg.hidden = false;
  chart.msg.className = isError ? 'chart-msg err' : 'chart-msg';
  chart.msg.textContent = text;
}

export function chartCanvas(chart) {
  chart.msg.hidden = true;
  chart.canvas.hidden = false;
  return chart.canvas;
}

export function drawChart(chart, fn) {
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
