// bertsweep dashboard: the study page's learning-curves chart.

import { isNum, clamp, fmtNum, fmtValue, trialPath } from './format.js';
import { COL } from './theme.js';
import { setupCanvas, widthOf, plotBox, canvasMessage, HitGrid, lazy, chartCanvas } from './chart.js';
import { linScale, epochScale, paddedDomain, drawAxes, clipTo, fillDots, decimate } from './scales.js';

/**
 * Each trial's objective per epoch (running trials dashed, pruned ones crossed where they
 * stopped, the best trial thick), optionally only the top k, for the study page's view (see
 * study-page.js). Returns the chart's draw function.
 */
export function curvesDrawer({ S, name, maximize, metricName }) {
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

  return drawCurves;
}
