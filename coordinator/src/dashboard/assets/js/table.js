// bertsweep dashboard: the study page's trial table: filters, sorting by any column, and a
// virtualised body (only the rows in view, and a few around them, are in the DOM).

import {
  STATES, isNum, ciOf, fmtCi, ciOverlap, fmtValue, fmtParam, fmtDuration, fmtSize, testCounterpart,
  HELD_OUT_NOTE, TIED_TITLE, trialDuration, trialPath,
} from './format.js';
import { h, setKids, badge, tiedBadge } from './dom.js';
import { apiStudy } from './api.js';

const ROW_H = 30; // trial table row height (matches --row-h in app.css)
const ROW_BUFFER = 10; // rows rendered above and below the visible window

/**
 * The trial table of the study page's view (see study-page.js). Returns its controls and its
 * scroller to place on the page, and refreshTable() to call when the trials or the best change.
 */
export function trialTable({ S, name, metricName }) {
  const T = S.table;
  const stateFilter = h('select', { id: 'trials-state', 'aria-label': 'Filter by state' },
    h('option', { value: '' }, 'All states'), STATES.map((s) => h('option', { value: s }, s)));
  const textFilter = h('input', { type: 'search', id: 'trials-filter', placeholder: 'Filter by parameter or worker…', 'aria-label': 'Filter trials' });
  const countText = h('span', { class: 'count', id: 'trials-count' }, '');
  const csvLink = h('a', { class: 'csv', href: `${apiStudy(name)}/trials.csv`, download: `${name}-trials.csv` }, 'Download CSV');
  const thead = h('thead');
  const tbody = h('tbody');
  const table = h('table', { class: 'trials', id: 'trials-table' }, thead, tbody);
  const scroller = h('div', { class: 'table-scroll', id: 'trials-scroll' }, table);
  stateFilter.addEventListener('change', () => { T.state = stateFilter.value; refreshTable(); });
  textFilter.addEventListener('input', () => { T.text = textFilter.value.trim().toLowerCase(); refreshTable(); });
  let scrollQueued = false;
  scroller.addEventListener('scroll', () => {
    if (scrollQueued) return;
    scrollQueued = true;
    requestAnimationFrame(() => { scrollQueued = false; renderTableWindow(); });
  }, { passive: true });

  function tableColumns() {
    const ps = S.params.filter((p) => p.kind !== 'fixed' || p.name === 'seed').map((p) => p.name);
    if (!ps.includes('seed') && S.list.some((t) => t.params && t.params.seed !== undefined)) ps.push('seed');
    return [
      { key: 'number', label: '#', num: true, get: (t) => t.number },
      { key: 'state', label: 'State', get: (t) => t.state },
      { key: 'value', label: 'Value', num: true, title: metricName(), get: (t) => (isNum(t.value) ? t.value : null) },
      // Once some trial has one: the objective's score on the held-out test set (shown only).
      ...(S.list.some((t) => isNum(t.test_value)) ? [{
        key: 'test',
        label: 'Test',
        num: true,
        title: `${testCounterpart(metricName()) || 'test score'}: ${HELD_OUT_NOTE}`,
        get: (t) => (isNum(t.test_value) ? t.test_value : null),
      }] : []),
      // Once some trial has one: the 95% bootstrap interval of the objective on the dev set.
      ...(S.list.some((t) => ciOf(t)) ? [{
        key: 'ci',
        label: '95% CI',
        num: true,
        title: `95% bootstrap confidence interval of ${metricName()} on the dev set (sorts by its low end); ≈ best: it overlaps the best trial's`,
        get: (t) => { const ci = ciOf(t); return ci ? ci[0] : null; },
      }] : []),
      ...ps.map((p) => ({ key: `p:${p}`, label: p, param: p, get: (t) => (t.params ? t.params[p] : undefined) })),
      { key: 'epochs', label: 'Epochs', num: true, get: (t) => (Array.isArray(t.curve) ? t.curve.length : 0) },
      { key: 'attempt', label: 'Attempt', num: true, get: (t) => t.attempt },
      { key: 'worker', label: 'Worker', get: (t) => t.worker || '' },
      { key: 'duration', label: 'Duration', num: true, get: (t) => trialDuration(t) },
      // Once some worker measured it: the most device memory an attempt held (0: not measured).
      ...(S.list.some((t) => t.peak_device_memory_bytes > 0) ? [{
        key: 'peak',
        label: 'Peak memory',
        num: true,
        title: 'the most device memory an attempt of the trial held',
        get: (t) => (t.peak_device_memory_bytes > 0 ? t.peak_device_memory_bytes : null),
      }] : []),
    ];
  }

  function renderHeadRow() {
    setKids(thead, h('tr', null, T.cols.map((c) => {
      const active = T.sortKey === c.key;
      const th = h('th', {
        class: c.num ? 'num' : null,
        'data-key': c.key,
        title: c.title || `sort by ${c.label}`,
        'aria-sort': active ? (T.sortDir > 0 ? 'ascending' : 'descending') : null,
      }, c.label, h('span', { class: 'arrow' }, active ? (T.sortDir > 0 ? '▲' : '▼') : ''));
      th.addEventListener('click', () => {
        if (T.sortKey === c.key) T.sortDir = -T.sortDir;
        else { T.sortKey = c.key; T.sortDir = 1; }
        renderHeadRow();
        refreshTable();
      });
      return th;
    })));
  }

  const searchText = new WeakMap();
  function haystack(t) {
    let s = searchText.get(t);
    if (s === undefined) {
      const parts = [t.worker || ''];
      if (t.params) for (const [k, v] of Object.entries(t.params)) parts.push(`${k}=${fmtParam(v)}`);
      s = parts.join(' ').toLowerCase();
      searchText.set(t, s);
    }
    return s;
  }

  function compareValues(a, b) {
    const na = a === undefined || a === null;
    const nb = b === undefined || b === null;
    if (na || nb) return na && nb ? 0 : na ? 1 : -1;
    if (typeof a === 'number' && typeof b === 'number') return a - b;
    if (typeof a === 'number') return -1;
    if (typeof b === 'number') return 1;
    return String(a).localeCompare(String(b));
  }

  function refreshTable() {
    const cols = tableColumns();
    const key = cols.map((c) => c.key).join('\u0000');
    if (key !== T.colsKey) {
      T.cols = cols;
      T.colsKey = key;
      if (!cols.some((c) => c.key === T.sortKey)) { T.sortKey = 'number'; T.sortDir = 1; }
      renderHeadRow();
    } else {
      T.cols = cols;
    }
    let rows = S.list;
    if (T.state) rows = rows.filter((t) => t.state === T.state);
    if (T.text) rows = rows.filter((t) => haystack(t).includes(T.text));
    const col = T.cols.find((c) => c.key === T.sortKey) || T.cols[0];
    if (col.key !== 'number' || T.sortDir !== 1) {
      const dir = T.sortDir;
      const keyed = rows.map((t) => [col.get(t), t]);
      keyed.sort((a, b) => {
        const an = a[0] === undefined || a[0] === null;
        const bn = b[0] === undefined || b[0] === null;
        if (an || bn) return an && bn ? a[1].number - b[1].number : an ? 1 : -1; // missing last either way
        return dir * compareValues(a[0], b[0]) || a[1].number - b[1].number;
      });
      rows = keyed.map((k) => k[1]);
    } else if (rows === S.list) {
      rows = rows.slice();
    }
    T.rows = rows;
    countText.textContent = `${rows.length} of ${S.list.length} trials`;
    renderTableWindow();
  }

  function spacer(px, span) {
    const td = h('td', { colspan: span });
    const tr = h('tr', { class: 'spacer', 'aria-hidden': 'true' }, td);
    tr.style.height = `${px}px`;
    td.style.height = `${px}px`;
    return tr;
  }

  function cell(t, c, tied) {
    const v = c.get(t);
    if (c.key === 'ci') return h('td', { class: 'num ci' }, tied ? tiedBadge() : null, tied ? ' ' : null, fmtCi(ciOf(t)));
    if (c.key === 'number') return h('td', { class: 'num' }, h('a', { href: trialPath(name, t.number) }, String(t.number)));
    if (c.key === 'state') return h('td', null, badge(t.state), t.error ? h('span', { class: 'muted', title: t.error }, ' ⚠') : null);
    if (c.key === 'value') return h('td', { class: 'num' }, fmtValue(v));
    if (c.key === 'test') return h('td', { class: 'num test' }, fmtValue(v));
    if (c.key === 'duration') return h('td', { class: 'num' }, fmtDuration(v));
    if (c.key === 'peak') return h('td', { class: 'num' }, v == null ? '—' : fmtSize(v));
    if (c.key === 'worker') return h('td', { class: 'mono', title: v }, v || '—');
    if (c.param) {
      const s = fmtParam(v);
      return h('td', { class: typeof v === 'number' ? 'num' : null, title: s }, s === '' ? '—' : s);
    }
    return h('td', { class: c.num ? 'num' : null }, v == null ? '—' : String(v));
  }

  function renderTableWindow() {
    const rows = T.rows;
    const span = Math.max(1, T.cols.length);
    if (!rows.length) {
      setKids(tbody, h('tr', { class: 'empty' }, h('td', { colspan: span },
        S.list.length ? 'No trial matches the filter.' : 'No trials yet.')));
      return;
    }
    const headH = thead.offsetHeight || 32;
    const viewH = scroller.clientHeight || 480;
    const top = Math.max(0, scroller.scrollTop - headH);
    const first = Math.max(0, Math.floor(top / ROW_H) - ROW_BUFFER);
    const last = Math.min(rows.length, Math.ceil((top + viewH) / ROW_H) + ROW_BUFFER);
    const bestNum = S.study ? S.study.best_trial : null;
    // Compared here rather than taken from the rows' overlaps_best: live events carry no
    // view of the best, and the best can change after any of them.
    const bestCi = bestNum != null ? ciOf(S.trials.get(bestNum)) : null;
    const frag = document.createDocumentFragment();
    if (first > 0) frag.append(spacer(first * ROW_H, span));
    for (let i = first; i < last; i++) {
      const t = rows[i];
      const isBest = t.number === bestNum;
      const tied = !isBest && ciOverlap(ciOf(t), bestCi);
      const tr = h('tr', {
        class: isBest ? 'row is-best' : tied ? 'row ties-best' : 'row',
        'data-trial': t.number,
        'data-overlaps-best': tied ? '1' : null,
        title: tied ? TIED_TITLE : null,
      });
      for (const c of T.cols) tr.append(cell(t, c, tied));
      frag.append(tr);
    }
    if (last < rows.length) frag.append(spacer((rows.length - last) * ROW_H, span));
    setKids(tbody, frag);
  }

  return { stateFilter, textFilter, countText, csvLink, scroller, refreshTable };
}
