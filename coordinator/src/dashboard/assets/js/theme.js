// bertsweep dashboard: the charts' colours and fonts, and the sequential colour scale of
// objective values (worst to best) that the parallel-coordinates chart draws with.

import { clamp } from './format.js';

export const COL = {
  completed: '#16a34a',
  pruned: '#d97706',
  running: '#2563eb',
  failed: '#dc2626',
  other: '#9ca3af',
  best: '#111827',
  bar: '#3b82f6',
  ci: 'rgba(37, 99, 235, 0.55)',
  tied: 'rgba(124, 58, 237, 0.07)',
  tiedText: '#6d28d9',
  band: 'rgba(99, 135, 240, 0.28)',
  bandEdge: '#6b8cf0',
  seed: '#2563eb',
  grid: '#eef0f3',
  axis: '#b6bcc6',
  text: '#4b5563',
  title: '#374151',
};
const FONT_FAMILY = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';
export const FONT = `11px ${FONT_FAMILY}`;
export const FONT_BOLD = `600 11px ${FONT_FAMILY}`;
export const FONT_MSG = `13px ${FONT_FAMILY}`;
// Sequential colour scale for objective values, worst -> best (viridis, light end trimmed).
export const SCALE_STOPS = [[190, 220, 60], [94, 201, 98], [33, 145, 140], [59, 82, 139], [68, 1, 84]];
export const SCALE_LEVELS = 32;
export const SCALE_COLORS = Array.from({ length: SCALE_LEVELS }, (_, i) => scaleColor(i / (SCALE_LEVELS - 1)));

function scaleColor(t) {
  const x = clamp(t, 0, 1) * (SCALE_STOPS.length - 1);
  const i = Math.min(SCALE_STOPS.length - 2, Math.floor(x));
  const f = x - i;
  const a = SCALE_STOPS[i];
  const b = SCALE_STOPS[i + 1];
  const c = (k) => Math.round(a[k] + (b[k] - a[k]) * f);
  return `rgb(${c(0)},${c(1)},${c(2)})`;
}
