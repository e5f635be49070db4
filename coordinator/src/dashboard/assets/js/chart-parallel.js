// bertsweep dashboard: the study page's parallel-coordinates chart.

import { isNum, clamp } from './format.js';
import { h, setKids } from './dom.js';
import { COL, FONT, FONT_BOLD, SCALE_STOPS, SCALE_LEVELS, SCALE_COLORS } from './theme.js';
import { setupCanvas, widthOf, plotBox, canvasMessage, truncateText, chartCanvas } from './chart.js';
import { linScale, paramScale, paddedDomain, hline, vline, clipTo } from './scales.js';

/**
 * One polyline per trial through its parameter values to its objective value, coloured worst to
 * best, for the study page's view (see study-page.js). Returns the chart's draw function.
 */
export function parallelDrawer({ S, searched, parallelLegend, metricName, maximize }) {
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

  return drawParallel;
}
