// bertsweep dashboard: the study page's slice charts (one small chart per searched parameter).

import { isNum, fmtParam, fmtValue, trialPath } from './format.js';
import { COL } from './theme.js';
import { setupCanvas, widthOf, plotBox, canvasMessage, HitGrid, lazy, ensureMinis, chartMessage } from './chart.js';
import { linScale, paramScale, paddedDomain, drawAxes, clipTo, fillDots, dotRadius } from './scales.js';

/**
 * The objective against each searched parameter, one small chart each, for the study page's
 * view (see study-page.js). Returns the chart's draw function.
 */
export function slicesDrawer({ S, name, searched, metricName }) {
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

  return drawSlices;
}
