// bertsweep dashboard: the trial page's metrics-per-epoch charts (one small chart per metric).

import { isNum, fmtNum } from './format.js';
import { COL } from './theme.js';
import { setupCanvas, widthOf, plotBox, HitGrid, lazy, ensureMinis, chartMessage } from './chart.js';
import { linScale, epochScale, paddedDomain, drawAxes, fillDots } from './scales.js';

/**
 * Each metric the trial reported, by epoch, one small chart each, for the trial page's view (see
 * trial-page.js). Returns the chart's draw function.
 */
export function metricsDrawer({ P, metricNames, objective }) {
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

  return drawMetrics;
}
