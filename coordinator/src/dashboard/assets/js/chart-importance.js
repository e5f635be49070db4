// bertsweep dashboard: the study page's parameter-importance chart.

import { isNum } from './format.js';
import { COL, FONT } from './theme.js';
import { setupCanvas, widthOf, plotBox, truncateText, chartMessage, chartCanvas } from './chart.js';
import { linScale, hline, vline } from './scales.js';

/**
 * Each parameter's importance (with its spread) as a horizontal bar, from the importance the
 * study page's view fetched (see study-page.js). Returns the chart's draw function.
 */
export function importanceDrawer({ S, importanceNote }) {
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

  return drawImportance;
}
