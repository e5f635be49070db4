// bertsweep dashboard: the study page's seed-spread chart.

import { isNum, clamp, ciOf, fmtCi, fmtParam, fmtValue, trialPath } from './format.js';
import { COL, FONT } from './theme.js';
import { setupCanvas, widthOf, plotBox, truncateText, HitGrid, lazy, chartMessage, chartCanvas } from './chart.js';
import { linScale, catKey, paddedDomain, hline, vline, fillDots } from './scales.js';

/**
 * One row per configuration: its seeds' values with their 95% intervals and the mean ± std,
 * marking the ones that may tie the best, from the configurations the study page's view
 * fetched (see study-page.js). Returns the chart's draw function.
 */
export function seedsDrawer({ S, name, seedsNote, metricName }) {
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

  return drawSeeds;
}
