// bertsweep dashboard: the study page ("/studies/{name}"): its header with the Stop button, its
// charts and its trial table, loaded in pages and then kept live from the study's event stream.
// The page's state (S) and the view over it are passed to the chart and table modules.

import { isNum, clamp, enc, trialPath, fmtValue, fmtTime, fmtGap, testCounterpart, HELD_OUT_NOTE } from './format.js';
import { h, setKids, badge, setBodyAttr, markReady } from './dom.js';
import { api, apiStudy, ApiError, Redirecting, errorText, reportError, throttled, studyEvents } from './api.js';
import { session, loadSession } from './session.js';
import { makeChart, drawChart, legend } from './chart.js';
import { historyDrawer } from './chart-history.js';
import { curvesDrawer } from './chart-curves.js';
import { parallelDrawer } from './chart-parallel.js';
import { slicesDrawer } from './chart-slices.js';
import { importanceDrawer } from './chart-importance.js';
import { seedsDrawer } from './chart-seeds.js';
import { trialTable } from './table.js';

const PAGE_TRIALS = 2000; // trials per API page (the server's maximum)
const REDRAW_MS = 250; // at most one redraw per this many ms
const IMPORTANCE_MS = 10000; // importance refetched at most this often
const CONFIGS_MS = 5000; // configurations refetched at most this often

/** Renders the page of study `name` into `app` and keeps it live. */
export function studyPage(app, name) {
  document.title = `${name} · bertsweep`;
  const S = {
    name,
    study: null,
    params: [],
    maxEpochs: null,
    trials: new Map(),
    list: [],
    listDirty: true,
    importance: { state: 'pending' },
    configs: { state: 'pending' },
    es: null,
    events: 0,
    topK: 'all',
    table: { sortKey: 'number', sortDir: 1, state: '', text: '', rows: [], colsKey: '', cols: [] },
    loaded: false,
  };
  setBodyAttr('data-events', 0);
  setBodyAttr('data-live', 0);

  // What the charts and the table ask of the study.
  const maximize = () => !(S.study && S.study.objective && S.study.objective.direction === 'minimize');
  const better = (a, b) => (maximize() ? a > b : a < b);
  const metricName = () => (S.study && S.study.objective && S.study.objective.metric) || 'value';
  const searched = () => S.params.filter((p) => p.kind !== 'fixed' && p.name !== 'seed');

  // ----- skeleton
  const headMain = h('div', { class: 'head-main' }, h('p', { class: 'loading' }, 'Loading study…'));
  const stopArea = h('div', { class: 'stop-area' });
  const charts = {
    history: makeChart('history'),
    curves: makeChart('curves'),
    parallel: makeChart('parallel'),
    slice: makeChart('slice'),
    importance: makeChart('importance'),
    seeds: makeChart('seeds'),
  };
  const topkSelect = h('select', { id: 'curves-topk', 'data-control': 'topk', 'aria-label': 'Curves shown' },
    h('option', { value: 'all' }, 'all'), ...[10, 25, 50, 100].map((k) => h('option', { value: String(k) }, `top ${k}`)));
  topkSelect.addEventListener('change', () => {
    S.topK = topkSelect.value === 'all' ? 'all' : Number(topkSelect.value);
    drawChart(charts.curves, drawCurves);
  });
  const importanceNote = h('div', { class: 'panel-note' });
  const seedsNote = h('div', { class: 'panel-note' });
  const parallelLegend = h('div', { class: 'legend' });

  // The charts and the trial table: each draws from the page's state through this view.
  const view = { S, name, maximize, better, metricName, searched, parallelLegend, importanceNote, seedsNote };
  const drawHistory = historyDrawer(view);
  const drawCurves = curvesDrawer(view);
  const drawParallel = parallelDrawer(view);
  const drawSlices = slicesDrawer(view);
  const drawImportance = importanceDrawer(view);
  const drawSeeds = seedsDrawer(view);

  function panel(title, chart, extra = {}) {
    return h('section', { class: extra.wide ? 'panel wide' : 'panel', id: `panel-${chart.id}` },
      h('div', { class: 'panel-head' }, h('h2', null, title), extra.legend || null,
        extra.tools ? h('div', { class: 'tools' }, extra.tools) : null),
      chart.el, extra.note || null);
  }

  // trial table
  const { stateFilter, textFilter, countText, csvLink, scroller, refreshTable } = trialTable(view);

  setKids(app,
    h('nav', { class: 'crumbs' }, h('a', { href: '/' }, 'Studies'), h('span', { class: 'sep' }, '/'), h('span', { class: 'here' }, name)),
    h('section', { class: 'card study-head' }, headMain, stopArea),
    h('div', { class: 'panels' },
      panel('Optimization history', charts.history, {
        legend: legend([['sw-dot c-completed', 'completed'], ['sw-dot c-pruned', 'pruned'], ['sw-line c-best', 'best so far']]),
      }),
      panel('Learning curves', charts.curves, {
        legend: legend([['sw-line c-completed', 'completed'], ['sw-x', 'pruned'], ['sw-dash c-running', 'running'], ['sw-thick c-best', 'best']]),
        tools: [h('label', { for: 'curves-topk' }, 'Show'), topkSelect],
      }),
      panel('Parallel coordinates', charts.parallel, { wide: true, legend: parallelLegend }),
      panel('Slices', charts.slice, {
        wide: true,
        legend: legend([['sw-dot c-completed', 'completed'], ['sw-dot c-pruned', 'pruned (value at stop)']]),
      }),
      panel('Parameter importance', charts.importance, { note: importanceNote }),
      panel('Seed spread', charts.seeds, {
        legend: legend([['sw-box c-band', 'mean ± std'], ['sw-dot c-seed', 'seed'], ['sw-line c-ci', "seed's 95% CI"], ['sw-tied', 'overlaps the best trial']]),
        note: seedsNote,
      }),
      h('section', { class: 'panel wide', id: 'panel-trials' },
        h('div', { class: 'panel-head' }, h('h2', null, 'Trials')),
        h('div', { class: 'table-tools' }, stateFilter, textFilter, countText, csvLink),
        scroller)),
  );

  // ----- data

  function revOlder(a, b) {
    // true when revision a is strictly older than b ([lease token, step], compared in order)
    if (!Array.isArray(a) || !Array.isArray(b)) return false;
    for (let i = 0; i < Math.min(a.length, b.length); i++) {
      if (a[i] !== b[i]) return a[i] < b[i];
    }
    return false;
  }

  function upsert(t) {
    if (!t || !isNum(t.number)) return;
    const old = S.trials.get(t.number);
    if (old && revOlder(t.rev, old.rev)) return; // an event older than what is shown
    S.trials.set(t.number, t);
    S.listDirty = true;
    // a value, state or parameter change moves points in history, parallel and slices
    if (!old || old.value !== t.value || old.state !== t.state || JSON.stringify(old.params) !== JSON.stringify(t.params)) {
      dirty.add('values');
    }
    dirty.add('curves');
    dirty.add('table');
  }

  function trialList() {
    if (S.listDirty) {
      S.list = Array.from(S.trials.values()).sort((a, b) => a.number - b.number);
      S.listDirty = false;
    }
    return S.list;
  }

  function setStudy(row) {
    if (!row || typeof row !== 'object' || row.name === undefined) return;
    if (S.study && S.study.best_trial !== row.best_trial) {
      dirty.add('curves'); // the best trial's curve is highlighted
      dirty.add('table'); // and so is its row
    }
    S.study = row;
  }

  async function loadStudy() {
    const d = await api(apiStudy(name));
    setStudy(d.study);
    S.params = Array.isArray(d.parameters) ? d.parameters : [];
    S.maxEpochs = isNum(d.max_epochs) ? d.max_epochs : null;
  }

  async function loadTrials() {
    const base = `${apiStudy(name)}/trials`;
    const ingest = (page) => { if (page && Array.isArray(page.trials)) page.trials.forEach(upsert); };
    const first = await api(`${base}?limit=${PAGE_TRIALS}`);
    ingest(first);
    if (first.next == null) return;
    const total = isNum(first.total) ? first.total : 0;
    const got = Array.isArray(first.trials) ? first.trials.length : 0;
    const pages = Math.ceil(Math.max(0, total - got) / PAGE_TRIALS);
    const start = Number(first.next);
    const froms = [];
    for (let i = 0; i < pages; i++) froms.push(start + i * PAGE_TRIALS);
    const results = await Promise.all(froms.map((f) => api(`${base}?from=${f}&limit=${PAGE_TRIALS}`)));
    results.forEach(ingest);
    // Trials created meanwhile (or gaps in numbering): follow `next` from the last page.
    let next = results.length ? results[results.length - 1].next : first.next;
    for (let guard = 0; next != null && guard < 1000; guard++) {
      const page = await api(`${base}?from=${enc(String(next))}&limit=${PAGE_TRIALS}`);
      ingest(page);
      next = page.next;
    }
  }

  async function loadAll() {
    await Promise.all([loadStudy(), loadTrials()]);
    S.loaded = true;
  }

  const importanceFetch = throttled(IMPORTANCE_MS, async () => {
    try {
      const d = await api(`${apiStudy(name)}/importance`);
      S.importance = { state: 'ok', data: d };
    } catch (e) {
      if (e instanceof Redirecting) return;
      S.importance = { state: 'error', error: errorText(e), status: e.status };
      if (!(e instanceof ApiError) || e.status !== 422) reportError(e, 'importance');
    } finally {
      scheduleRender('importance');
    }
  });

  const configsFetch = throttled(CONFIGS_MS, async () => {
    try {
      const d = await api(`${apiStudy(name)}/configurations`);
      S.configs = { state: 'ok', data: d };
    } catch (e) {
      if (e instanceof Redirecting) return;
      S.configs = { state: 'error', error: errorText(e) };
      reportError(e, 'configurations');
    } finally {
      scheduleRender('seeds');
    }
  });

  // ----- rendering (coalesced)

  let renderTimer = null;
  let lastRender = -Infinity;
  // What the next redraw must redo: 'values' (history, parallel, slices), 'curves', 'table',
  // 'importance', 'seeds', or 'all'. The header is always redrawn (it is cheap).
  const dirty = new Set(['all']);

  function scheduleRender(...keys) {
    for (const k of keys) dirty.add(k);
    if (renderTimer || !S.loaded) return;
    renderTimer = setTimeout(() => {
      renderTimer = null;
      renderAll();
    }, Math.max(0, lastRender + REDRAW_MS - performance.now()));
  }

  /** Redraws what changed since the last redraw (everything when 'all' is marked). */
  function renderAll() {
    if (renderTimer) { clearTimeout(renderTimer); renderTimer = null; }
    lastRender = performance.now();
    if (!S.study) return;
    const all = dirty.has('all');
    const marked = new Set(dirty);
    dirty.clear();
    const need = (k) => all || marked.has(k);
    trialList();
    try { renderHeader(); } catch (e) { reportError(e, 'header'); }
    if (need('values')) {
      drawChart(charts.history, drawHistory);
      drawChart(charts.parallel, drawParallel);
      drawChart(charts.slice, drawSlices);
    }
    if (need('curves')) drawChart(charts.curves, drawCurves);
    if (need('importance')) drawChart(charts.importance, drawImportance);
    if (need('seeds')) drawChart(charts.seeds, drawSeeds);
    if (need('table')) {
      try { refreshTable(); } catch (e) { reportError(e, 'trial table'); }
    }
  }

  window.addEventListener('resize', () => scheduleRender('all'));

  // ----- header and stop button

  function stat(label, value, wide = false) {
    return h('div', { class: wide ? 'stat wide' : 'stat' }, h('dt', null, label), h('dd', null, value));
  }

  function renderHeader() {
    const s = S.study;
    const c = s.counts || {};
    const done = (c.completed || 0) + (c.pruned || 0) + (c.failed || 0) + (c.stopped || 0);
    const max = isNum(s.max_trials) ? s.max_trials : null;
    const obj = s.objective || {};
    const live = !!(S.es && S.es.open);
    // The best trial's held-out test score beside its own dev value (shown, never chosen
    // by). With seed repeats the best value is its configuration's mean, so the trial's own
    // dev value is named too and the gap is the trial's.
    const bestRow = s.best_trial != null ? S.trials.get(s.best_trial) : null;
    const bestTest = bestRow && isNum(bestRow.test_value) && isNum(bestRow.value) ? bestRow.test_value : null;
    const testName = testCounterpart(obj.metric) || 'test';
    let testLine = null;
    if (bestTest != null) {
      const gap = fmtGap(bestRow.value - bestTest);
      testLine = h('span', {
        class: 'test-value',
        id: 'best-test-value',
        'data-value': bestTest,
        title: `${testName} of trial ${bestRow.number}: ${HELD_OUT_NOTE}. Selection optimism (dev − test): ${gap}`,
      },
      bestRow.value !== s.best_value ? `trial dev ${fmtValue(bestRow.value)} · ` : null,
      `test ${fmtValue(bestTest)}`, h('span', { class: 'muted' }, ` (dev − test ${gap})`));
    }
    const best = isNum(s.best_value)
      ? h('span', null, h('span', { id: 'best-dev-value', title: `${obj.metric || 'value'} on the dev set` }, fmtValue(s.best_value)),
        s.best_trial != null ? [' (', h('a', { href: trialPath(name, s.best_trial), id: 'best-trial-link' }, `trial ${s.best_trial}`), ')'] : null,
        testLine ? [h('br'), testLine] : null)
      : '—';
    const fill = h('div', { class: 'bar-fill' });
    fill.style.width = `${max ? clamp((100 * done) / max, 0, 100) : 0}%`;
    setKids(headMain,
      h('div', { class: 'title-row' }, h('h1', null, s.name), badge(s.state)),
      h('div', { class: 'subtitle' },
        h('span', { class: live ? 'live-dot on' : 'live-dot', title: live ? 'live updates on' : 'not live' }),
        `${obj.direction || 'maximize'} ${obj.metric || '?'}`,
        s.reason ? [' · ', h('span', { class: 'reason' }, s.reason)] : null),
      h('dl', { class: 'stats' },
        stat('Progress', h('div', { class: 'progress' },
          h('span', { class: 'progress-text' }, `${done}/${max == null ? '∞' : max}`),
          max ? h('div', { class: 'bar' }, fill) : null)),
        stat('Best value', best, !!testLine),
        stat('Sampler', s.sampler || '—'),
        stat('Early stopping', s.early_stopping || 'none'),
        stat('Seed repeats', String(isNum(s.repeats) ? s.repeats : 1)),
        stat('Created', fmtTime(s.created_ms)),
        isNum(s.finished_ms) ? stat('Finished', fmtTime(s.finished_ms)) : null),
      h('div', { class: 'counts' },
        ['completed', 'pruned', 'running', 'paused', 'pending', 'failed', 'stopped'].map((k) =>
          h('span', { class: 'count-chip' }, h('b', null, String(c[k] || 0)), ` ${k}`))
          .reduce((acc, el, i) => (i ? acc.concat([' · ', el]) : [el]), [])),
    );
    updateStopArea();
  }

  const stopButton = h('button', { class: 'btn danger', type: 'button', id: 'stop-study' }, 'Stop study');
  const tokenInput = h('input', { type: 'password', id: 'stop-token', placeholder: 'Coordinator token', autocomplete: 'off', 'aria-label': 'Coordinator token' });
  const confirmButton = h('button', { class: 'btn danger-solid', type: 'submit', id: 'stop-confirm' }, 'Confirm stop');
  const cancelButton = h('button', { class: 'btn', type: 'button' }, 'Cancel');
  const stopError = h('div', { class: 'error-line', id: 'stop-error', role: 'alert' });
  const stopForm = h('form', { class: 'stop-form', hidden: true }, tokenInput, confirmButton, cancelButton);
  stopArea.append(stopButton, stopForm, stopError);
  stopArea.hidden = true;
  stopButton.addEventListener('click', () => {
    stopButton.hidden = true;
    stopForm.hidden = false;
    stopError.textContent = '';
    tokenInput.focus();
  });
  cancelButton.addEventListener('click', () => {
    stopForm.hidden = true;
    stopButton.hidden = false;
    stopError.textContent = '';
    tokenInput.value = '';
  });
  stopForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = tokenInput.value.trim();
    if (!token) {
      stopError.textContent = 'Enter the coordinator token to stop the study.';
      return;
    }
    confirmButton.disabled = true;
    stopError.textContent = '';
    try {
      const d = await api(`${apiStudy(name)}/stop`, {
        method: 'POST',
        noRedirect: true,
        headers: { Authorization: `Bearer ${token}` },
      });
      tokenInput.value = '';
      stopForm.hidden = true;
      stopButton.hidden = false;
      setStudy(d.study);
      renderAll();
    } catch (e) {
      if (!(e instanceof Redirecting)) stopError.textContent = errorText(e);
    } finally {
      confirmButton.disabled = false;
    }
  });

  function updateStopArea() {
    stopArea.hidden = !(session.can_stop && S.study && S.study.state === 'RUNNING');
  }

  // ----- live updates

  function setLive(on) {
    setBodyAttr('data-live', on ? 1 : 0);
    const dot = headMain.querySelector('.live-dot');
    if (dot) {
      dot.className = on ? 'live-dot on' : 'live-dot';
      dot.title = on ? 'live updates on' : 'not live';
    }
  }

  function countEvent() {
    S.events += 1;
    setBodyAttr('data-events', S.events);
  }

  function closeEvents() {
    if (S.es) { S.es.close(); S.es = null; }
    setLive(false);
  }

  let resyncing = false;
  async function resync() {
    if (resyncing) return;
    resyncing = true;
    try {
      await loadAll();
      dirty.add('all');
      renderAll();
    } catch (e) {
      reportError(e);
    } finally {
      resyncing = false;
    }
    importanceFetch.request();
    configsFetch.request();
  }

  function openEvents() {
    closeEvents();
    S.es = studyEvents(name, {
      live: setLive,
      count: countEvent,
      reconnected: () => { if (S.loaded) resync(); },
      trial: (t) => {
        if (!t) return;
        upsert(t);
        importanceFetch.request();
        configsFetch.request();
        scheduleRender();
      },
      study: (st) => { if (st) { setStudy(st); scheduleRender(); } },
      resync: () => resync(),
      end: (st) => {
        if (st) setStudy(st);
        S.es = null;
        // The registry can be a change ahead of the stream: read the final state once more.
        if (S.loaded) resync();
      },
    });
  }

  // ----- start

  (async () => {
    // Events first, then the snapshot: a change committed while the pages load arrives as
    // an event, and `upsert` keeps whichever of the two is newer (by `rev`).
    openEvents();
    try {
      await loadAll();
    } catch (e) {
      reportError(e);
      setKids(app, h('nav', { class: 'crumbs' }, h('a', { href: '/' }, 'Studies'), h('span', { class: 'sep' }, '/'), h('span', { class: 'here' }, name)),
        h('div', { class: 'card' }, h('p', { class: 'chart-msg' }, `Could not load study ${name}: ${errorText(e)}`)));
      markReady();
      return;
    }
    renderAll();
    const firstFetches = [importanceFetch.now(), configsFetch.now()];
    loadSession().then(() => updateStopArea());
    await Promise.allSettled(firstFetches);
    dirty.add('all');
    renderAll();
    markReady();
  })().catch((e) => { reportError(e); markReady(); });
}
