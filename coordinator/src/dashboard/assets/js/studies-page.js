// bertsweep dashboard: the studies page ("/"): every study with its state, progress and best value.

import { isNum, clamp, studyPath, trialPath, fmtValue, fmtTime, fmtClock } from './format.js';
import { h, setKids, badge, markReady } from './dom.js';
import { api, reportError } from './api.js';

const PAGE_STUDIES = 500;

/** Renders the studies page into `app`. */
export function studiesPage(app) {
  document.title = 'Studies · bertsweep';
  const status = h('span', { class: 'muted small' });
  const refresh = h('button', { class: 'btn', type: 'button', id: 'refresh' }, 'Refresh');
  const tbody = h('tbody');
  const table = h('table', { class: 'grid', id: 'studies-table' },
    h('thead', null, h('tr', null,
      h('th', null, 'Study'), h('th', null, 'State'), h('th', null, 'Progress'),
      h('th', { class: 'num' }, 'Running'), h('th', { class: 'num' }, 'Best value'),
      h('th', null, 'Sampler'), h('th', null, 'Early stopping'), h('th', null, 'Created'))),
    tbody);
  setKids(app,
    h('div', { class: 'page-head' }, h('h1', null, 'Studies'), h('div', { class: 'actions' }, status, refresh)),
    h('div', { class: 'card table-wrap' }, table),
  );

  function row(s) {
    const c = s.counts || {};
    const done = (c.completed || 0) + (c.pruned || 0) + (c.failed || 0) + (c.stopped || 0);
    const max = isNum(s.max_trials) ? s.max_trials : null;
    const fill = h('div', { class: 'bar-fill' });
    fill.style.width = `${max ? clamp((100 * done) / max, 0, 100) : 0}%`;
    const best = isNum(s.best_value)
      ? (s.best_trial != null
        ? h('a', { href: trialPath(s.name, s.best_trial), title: `trial ${s.best_trial}` }, fmtValue(s.best_value))
        : fmtValue(s.best_value))
      : '—';
    return h('tr', { 'data-study': s.name },
      h('td', null, h('a', { href: studyPath(s.name) }, s.name)),
      h('td', null, badge(s.state)),
      h('td', null, h('div', { class: 'progress' },
        h('span', { class: 'progress-text' }, `${done}/${max == null ? '∞' : max}`),
        max ? h('div', { class: 'bar', title: `${done} of ${max} trials done` }, fill) : null)),
      h('td', { class: 'num' }, String(c.running || 0)),
      h('td', { class: 'num' }, best),
      h('td', null, s.sampler || '—'),
      h('td', null, s.early_stopping || 'none'),
      h('td', null, fmtTime(s.created_ms)));
  }

  async function load() {
    refresh.disabled = true;
    status.textContent = 'Loading…';
    try {
      const rows = [];
      let from = null;
      for (let guard = 0; guard < 10000; guard++) {
        const q = new URLSearchParams({ limit: String(PAGE_STUDIES) });
        if (from != null) q.set('from', String(from));
        const page = await api(`/api/studies?${q}`);
        if (Array.isArray(page.studies)) rows.push(...page.studies);
        from = page.next;
        if (from == null) break;
      }
      setKids(tbody, ...(rows.length
        ? rows.map(row)
        : [h('tr', { class: 'empty' }, h('td', { colspan: 8 }, 'No studies yet. Create one with the bertsweep CLI.'))]));
      status.textContent = `${rows.length} ${rows.length === 1 ? 'study' : 'studies'} · updated ${fmtClock(Date.now())}`;
    } catch (e) {
      reportError(e);
      status.textContent = '';
    } finally {
      refresh.disabled = false;
      markReady();
    }
  }

  refresh.addEventListener('click', () => { load(); });
  load();
}
