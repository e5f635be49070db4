// bertsweep dashboard: the study page's optimization-history chart.

import { isNum, fmtParam, fmtValue, trialPath } from './format.js';
import { COL } from './theme.js';
import { setupCanvas, widthOf, plotBox, canvasMessage, HitGrid, lazy, chartCanvas } from './chart.js';
import { linScale, paddedDomain, drawAxes, clipTo, fillDots, dotRadius } from './scales.js';

/**
 * Every trial's value by trial number (coloured by state) and the best so far as a step line,
 * for the study page's view (see study-page.js). Returns the chart's draw function.
 */
export function historyDrawer({ S, name, better, metricName }) {
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

  return drawHistory;
}
