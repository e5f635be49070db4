// bertsweep dashboard: the trial page ("/studies/{name}/trials/{n}"): one trial's header, metrics
// per epoch, parameters and final metrics, dev vs held-out test, the dev-set evaluation, earlier
// attempts and its model, refetched when the study's event stream says the trial changed.

import {
  isNum, studyPath, fmtValue, fmtParam, fmtNum, fmtTime, fmtDuration, fmtSize, ciOf, fmtCi, fmtGap,
  testCounterpart, HELD_OUT_NOTE, trialDuration, shellQuote,
} from './format.js';
import { h, setKids, badge, tiedBadge, setBodyAttr, markReady } from './dom.js';
import { api, apiStudy, reportError, throttled, studyEvents } from './api.js';
import { makeChart, drawChart } from './chart.js';
import { metricsDrawer } from './chart-metrics.js';

const TRIAL_DETAIL_MS = 1000; // trial page: detail refetched at most this often

/** Renders the page of trial `number` of study `name` into `app` and keeps it live. */
export function trialPage(app, name, number) {
  document.title = `Trial ${number} · ${name} · bertsweep`;
  const P = { study: null, params: [], maxEpochs: null, detail: null, es: null, events: 0 };
  setBodyAttr('data-events', 0);
  setBodyAttr('data-live', 0);

  const head = h('div', { class: 'head-main' }, h('p', { class: 'loading' }, 'Loading trial…'));
  const metricsChart = makeChart('metrics');
  const body = h('div');
  setKids(app,
    h('nav', { class: 'crumbs' },
      h('a', { href: '/' }, 'studies'), h('span', { class: 'sep' }, '/'),
      h('a', { href: studyPath(name) }, name), h('span', { class: 'sep' }, '/'),
      h('span', { class: 'here' }, `trial ${number}`)),
    h('section', { class: 'card study-head' }, head),
    h('section', { class: 'panel wide', id: 'panel-metrics' },
      h('div', { class: 'panel-head' }, h('h2', null, 'Metrics per epoch')),
      metricsChart.el),
    body,
  );

  const objective = () => (P.study && P.study.objective) || { metric: 'value', direction: 'maximize' };

  function metricNames(d) {
    const names = new Set();
    for (const ep of d.epochs || []) {
      if (!ep || !ep.metrics) continue;
      for (const [k, v] of Object.entries(ep.metrics)) if (k !== 'epoch' && isNum(v)) names.add(k);
    }
    const obj = objective().metric;
    const rank = (k) => (k === obj ? 0 : k.startsWith('eval_') ? 1 : k.startsWith('train_') ? 2 : 3);
    return Array.from(names).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  }

  function kvRow(k, v) {
    return h('tr', null, h('th', null, k), h('td', null, v));
  }

  function renderTrial() {
    const d = P.detail;
    if (!d) return;
    const obj = objective();
    const isBest = P.study && P.study.best_trial === d.number;
    setKids(head,
      h('div', { class: 'title-row' }, h('h1', null, `Trial ${d.number}`), badge(d.state),
        isBest ? h('span', { class: 'badge best' }, 'best') : null),
      h('div', { class: 'subtitle' }, `${obj.metric}: `, h('b', null, fmtValue(d.value)),
        ciOf(d) ? h('span', { id: 'trial-ci', title: `95% bootstrap confidence interval of ${obj.metric} on the dev set` },
          ` (95% CI ${fmtCi(ciOf(d))})`) : null,
        d.overlaps_best === true ? [' ', tiedBadge(`this trial's interval overlaps the best trial's (trial ${P.study ? P.study.best_trial : '?'}): may be tied`)] : null,
        isNum(d.test_value)
          ? [' · ', h('span', { id: 'trial-test-value', title: `${testCounterpart(obj.metric)}: ${HELD_OUT_NOTE}` },
            `${testCounterpart(obj.metric)}: `, h('b', null, fmtValue(d.test_value)))]
          : null,
        ` · study `, h('a', { href: studyPath(name) }, name)),
      h('dl', { class: 'stats' },
        h('div', { class: 'stat' }, h('dt', null, 'Attempt'), h('dd', null, String(d.attempt == null ? '—' : d.attempt))),
        h('div', { class: 'stat' }, h('dt', null, 'Worker'), h('dd', { class: 'mono' }, d.worker || '—')),
        h('div', { class: 'stat' }, h('dt', null, 'Created'), h('dd', null, fmtTime(d.created_ms))),
        h('div', { class: 'stat' }, h('dt', null, 'Started'), h('dd', null, fmtTime(d.started_ms))),
        h('div', { class: 'stat' }, h('dt', null, 'Finished'), h('dd', null, fmtTime(d.finished_ms))),
        h('div', { class: 'stat' }, h('dt', null, 'Duration'), h('dd', null, fmtDuration(trialDuration(d)))),
        d.peak_device_memory_bytes > 0
          ? h('div', { class: 'stat', id: 'trial-peak-memory' }, h('dt', null, 'Peak memory'), h('dd', { title: `${d.peak_device_memory_bytes} bytes` }, fmtSize(d.peak_device_memory_bytes))) : null,
        d.state === 'RUNNING' && isNum(d.lease_expires_ms)
          ? h('div', { class: 'stat' }, h('dt', null, 'Lease expires'), h('dd', null, fmtTime(d.lease_expires_ms))) : null),
      d.error ? h('pre', { class: 'error-text', id: 'trial-error' }, d.error) : null,
    );

    drawChart(metricsChart, drawMetrics);

    // params + final metrics
    const kinds = new Map(P.params.map((p) => [p.name, p]));
    const paramRows = Object.entries(d.params || {}).map(([k, v]) => {
      const p = kinds.get(k);
      return h('tr', null, h('th', null, k), h('td', null, fmtParam(v)),
        h('td', { class: 'muted' }, p ? (p.kind === 'range' ? `range${p.log ? ', log' : ''}${p.integer ? ', int' : ''}` : p.kind) : ''));
    });
    const finals = Object.entries(d.metrics || {});
    const sections = [
      h('div', { class: 'trial-grid' },
        h('section', { class: 'panel' }, h('h2', { class: 'section-title' }, 'Parameters'),
          paramRows.length ? h('table', { class: 'kv', id: 'params-table' }, h('tbody', null, paramRows)) : h('p', { class: 'muted' }, 'No parameters.')),
        h('section', { class: 'panel' }, h('h2', { class: 'section-title' }, 'Final metrics'),
          finals.length
            ? h('table', { class: 'kv', id: 'final-metrics' }, h('tbody', null, finals.map(([k, v]) => kvRow(k, isNum(v) ? fmtNum(v) : fmtParam(v)))))
            : h('p', { class: 'muted' }, d.state === 'RUNNING' ? 'Still training.' : 'No final metrics.'))),
    ];

    const devTest = devTestSection(d, obj);
    if (devTest) sections.push(devTest);

    const evaluation = evaluationSection(d, obj);
    if (evaluation) sections.push(evaluation);

    // metrics per epoch table
    const names = metricNames(d);
    const epochs = Array.isArray(d.epochs) ? d.epochs : [];
    sections.push(h('section', { class: 'panel wide', id: 'epochs-panel' },
      h('h2', { class: 'section-title' }, 'Epochs'),
      epochs.length
        ? h('div', { class: 'table-wrap' }, h('table', { class: 'grid', id: 'epochs-table' },
          h('thead', null, h('tr', null, h('th', { class: 'num' }, 'epoch'), names.map((n) => h('th', { class: 'num' }, n)))),
          h('tbody', null, epochs.map((ep) => h('tr', { 'data-epoch': ep.epoch },
            h('td', { class: 'num' }, fmtNum(ep.epoch)),
            names.map((n) => h('td', { class: 'num' }, ep.metrics && ep.metrics[n] !== undefined ? fmtNum(ep.metrics[n]) : '—')))))))
        : h('p', { class: 'muted' }, 'No epoch reported yet.')));

    // earlier attempts
    const earlier = Array.isArray(d.earlier_attempts) ? d.earlier_attempts : [];
    if (earlier.length) {
      const enames = new Set();
      for (const a of earlier) for (const k of Object.keys(a.metrics || {})) enames.add(k);
      const en = Array.from(enames).sort();
      sections.push(h('section', { class: 'panel wide', id: 'attempts-panel' },
        h('h2', { class: 'section-title' }, 'Earlier attempts'),
        h('div', { class: 'table-wrap' }, h('table', { class: 'grid', id: 'attempts-table' },
          h('thead', null, h('tr', null, h('th', { class: 'num' }, 'attempt'), h('th', { class: 'num' }, 'epoch'), en.map((n) => h('th', { class: 'num' }, n)))),
          h('tbody', null, earlier.map((a) => h('tr', null,
            h('td', { class: 'num' }, fmtNum(a.attempt)), h('td', { class: 'num' }, fmtNum(a.epoch)),
            en.map((n) => h('td', { class: 'num' }, a.metrics && a.metrics[n] !== undefined ? fmtNum(a.metrics[n]) : '—')))))))));
    }

    // model
    let model;
    if (Array.isArray(d.model_files)) {
      const total = d.model_files.reduce((sum, f) => sum + (isNum(f.size) ? f.size : 0), 0);
      model = d.model_files.length
        ? h('div', null,
          d.model_tar_url
            ? h('p', null, h('a', { href: d.model_tar_url, id: 'model-tar' }, 'Download the whole model (.tar)'),
              h('span', { class: 'size' }, ` ${fmtSize(total)}, unpack with tar -xf, load with from_pretrained`))
            : null,
          h('ul', { class: 'files', id: 'model-files' }, d.model_files.map((f) => h('li', null,
            h('a', { href: f.url, download: String(f.path).split('/').pop() }, f.path),
            h('span', { class: 'size' }, fmtSize(f.size))))))
        : h('p', { class: 'muted' }, 'The model has no files.');
    } else if (!d.artifact) {
      model = h('p', { class: 'muted', id: 'model-none' },
        d.state === 'RUNNING' || d.state === 'PENDING' ? 'no model yet (the trial has not finished)' : 'no model kept');
    } else {
      model = h('div', { id: 'model-artifact' },
        h('div', null, 'Artifact: ', h('code', null, d.artifact)),
        h('div', { class: 'muted small' }, 'The coordinator does not hold this model; download it with:'),
        h('code', { class: 'cmd' }, `bertsweep download ${shellQuote(name)} --trial ${d.number} DIR`));
    }
    sections.push(h('section', { class: 'panel wide', id: 'model-panel' }, h('h2', { class: 'section-title' }, 'Model'), model));

    setKids(body, ...sections);
  }

  /**
   * Dev and held-out test scores side by side, one row per metric scored on both (`eval_X`
   * and `test_X`), with the gap dev − test: the selection optimism of the dev score, which
   * was the best of many on that same set (null: the trial has no test scores).
   */
  function devTestSection(d, obj) {
    const test = d.test_metrics && typeof d.test_metrics === 'object' ? d.test_metrics : null;
    if (!test || !Object.keys(test).length) return null;
    const dev = d.metrics && typeof d.metrics === 'object' ? d.metrics : {};
    const pairs = Object.keys(dev)
      .filter((k) => isNum(dev[k]) && isNum(test[testCounterpart(k)]))
      .map((k) => ({ key: k, name: k.slice('eval_'.length), dev: dev[k], test: test[testCounterpart(k)] }))
      .sort((a, b) => a.name.localeCompare(b.name));
    const gapTitle = 'selection optimism: how much better the dev score looks than the same model scores on data the search never saw (positive for scores, negative for losses)';
    const table = pairs.length
      ? h('div', { class: 'table-wrap' }, h('table', { class: 'grid dev-test', id: 'trial-dev-test' },
        h('caption', null, 'Dev vs held-out test; the last column is the selection optimism (dev − test)'),
        h('thead', null, h('tr', null, h('th', null, 'metric'), h('th', { class: 'num' }, 'dev'), h('th', { class: 'num' }, 'test'),
          h('th', { class: 'num', title: gapTitle }, 'selection optimism (dev − test)'))),
        h('tbody', null, pairs.map((p) => h('tr', { 'data-metric': p.name, class: p.key === obj.metric ? 'objective' : null },
          h('td', { class: 'metric-name' }, p.name),
          h('td', { class: 'num' }, p.dev.toFixed(4)),
          h('td', { class: 'num' }, p.test.toFixed(4)),
          h('td', { class: 'num gap' }, fmtGap(p.dev - p.test)))))))
      : h('table', { class: 'kv', id: 'trial-test-only' }, h('tbody', null,
        Object.entries(test).map(([k, v]) => kvRow(k, isNum(v) ? fmtNum(v) : fmtParam(v)))));
    return h('section', { class: 'panel wide', id: 'dev-test-panel' },
      h('h2', { class: 'section-title' }, 'Dev vs held-out test'),
      h('p', { class: 'muted small', id: 'trial-dev-test-note' }, HELD_OUT_NOTE),
      pairs.length ? null : h('p', { class: 'muted small' }, 'No test score has a dev counterpart (eval_…) among the final metrics.'),
      table);
  }

  /** The dev-set evaluation: per-class scores and the confusion matrix (null: nothing to show). */
  function evaluationSection(d, obj) {
    const e = d.evaluation && typeof d.evaluation === 'object' ? d.evaluation : null;
    if (!e) {
      if (d.state !== 'COMPLETED') return null;
      return h('section', { class: 'panel wide', id: 'evaluation-panel' },
        h('h2', { class: 'section-title' }, 'Dev-set evaluation'),
        h('p', { class: 'muted', id: 'evaluation-none' },
          'No dev-set predictions: the worker sent none (it predates them, or the dev set was over the size limit).'));
    }
    const ci = ciOf(e);
    const facts = [
      isNum(e.epoch) ? `epoch ${e.epoch}` : null,
      isNum(e.examples) ? `${e.examples} examples` : null,
      isNum(e.class_count) ? `${e.class_count} classes` : null,
      ci ? `95% CI of ${obj.metric}: ${fmtCi(ci)}` : `no interval (${obj.metric} is undefined on most resamples)`,
    ].filter((x) => x != null).join(' · ');
    const perClass = Array.isArray(e.per_class) ? e.per_class : [];
    const classTable = perClass.length
      ? h('div', { class: 'table-wrap' }, h('table', { class: 'grid', id: 'trial-per-class' },
        h('thead', null, h('tr', null, h('th', null, 'class'), ['precision', 'recall', 'F1', 'support'].map((k) => h('th', { class: 'num' }, k)))),
        h('tbody', null, perClass.map((c, k) => h('tr', { 'data-class': k },
          h('td', { class: 'class-name' }, c && c.name != null ? String(c.name) : String(k)),
          [c.precision, c.recall, c.f1].map((v) => h('td', { class: 'num' }, isNum(v) ? v.toFixed(4) : '—')),
          h('td', { class: 'num' }, isNum(c.support) ? String(c.support) : '—'))))))
      : h('p', { class: 'muted' }, 'Per-class scores are shown for up to 64 classes.');
    return h('section', { class: 'panel wide', id: 'evaluation-panel' },
      h('h2', { class: 'section-title' }, 'Dev-set evaluation'),
      h('p', { class: 'muted small', id: 'evaluation-facts' }, facts),
      h('div', { class: 'eval-grid' },
        h('div', null, h('h3', { class: 'sub-title' }, 'Per class'), classTable),
        h('div', null, h('h3', { class: 'sub-title' }, 'Confusion matrix'), confusionTable(e.confusion))));
  }

  /** Rows: true class; columns: predicted; each cell shaded by its share of the row. */
  function confusionTable(cm) {
    const names = cm && Array.isArray(cm.classes) ? cm.classes.map((c) => String(c)) : [];
    const matrix = cm && Array.isArray(cm.matrix) ? cm.matrix : [];
    if (!names.length || matrix.length !== names.length) {
      return h('p', { class: 'muted' }, 'The confusion matrix is shown for up to 32 classes.');
    }
    const rows = matrix.map((row, i) => {
      const counts = Array.isArray(row) ? row.map((v) => (isNum(v) ? v : 0)) : [];
      const total = counts.reduce((a, b) => a + b, 0);
      return h('tr', { 'data-true': i },
        h('th', { class: 'class-name', scope: 'row', title: `true ${names[i]}` }, names[i]),
        names.map((pred, j) => {
          const count = counts[j] || 0;
          const share = total > 0 ? count / total : 0;
          const td = h('td', {
            class: i === j ? 'num cm-cell diag' : 'num cm-cell',
            'data-true': i,
            'data-predicted': j,
            title: `${count} of ${total} ${names[i]} examples predicted ${pred} (${(100 * share).toFixed(1)}%)`,
          }, String(count));
          td.style.backgroundColor = `rgba(29, 78, 216, ${(0.85 * share).toFixed(3)})`;
          if (share > 0.5) td.classList.add('dark');
          return td;
        }),
        h('td', { class: 'num muted' }, String(total)));
    });
    return h('div', { class: 'table-wrap' }, h('table', { class: 'grid confusion', id: 'trial-confusion' },
      h('thead', null, h('tr', null, h('th', { class: 'corner', title: 'rows: true class · columns: predicted class' }, 'true ↓ · predicted →'),
        names.map((n) => h('th', { class: 'num class-name', scope: 'col', title: `predicted ${n}` }, n)),
        h('th', { class: 'num' }, 'total'))),
      h('tbody', null, rows)));
  }
  const drawMetrics = metricsDrawer({ P, metricNames, objective });

  async function loadStudy() {
    const s = await api(apiStudy(name));
    P.study = s.study || null;
    P.params = Array.isArray(s.parameters) ? s.parameters : [];
    P.maxEpochs = isNum(s.max_epochs) ? s.max_epochs : null;
  }

  async function loadDetail() {
    P.detail = await api(`${apiStudy(name)}/trials/${number}`);
  }

  const detailFetch = throttled(TRIAL_DETAIL_MS, async () => {
    await loadDetail();
    renderTrial();
  });

  function setLive(on) { setBodyAttr('data-live', on ? 1 : 0); }
  function countEvent() {
    P.events += 1;
    setBodyAttr('data-events', P.events);
  }
  function openEvents() {
    P.es = studyEvents(name, {
      live: setLive,
      count: countEvent,
      reconnected: () => detailFetch.request(),
      trial: (t) => { if (t && t.number === number) detailFetch.request(); },
      study: (st) => {
        if (!st || st.name === undefined) return;
        const bestChanged = !P.study || P.study.best_trial !== st.best_trial;
        P.study = st;
        if (bestChanged) {
          renderTrial();
          detailFetch.request(); // overlaps_best is against the new best
        }
      },
      resync: () => detailFetch.request(),
      end: (st) => {
        if (st && st.name !== undefined) P.study = st;
        P.es = null;
        detailFetch.request();
      },
    });
  }

  window.addEventListener('resize', () => {
    if (P.detail) drawChart(metricsChart, drawMetrics);
  });

  (async () => {
    try {
      await Promise.all([loadStudy(), loadDetail()]);
    } catch (e) {
      reportError(e);
      setKids(head, h('p', { class: 'muted' }, `Could not load trial ${number} of ${name}.`));
      markReady();
      return;
    }
    renderTrial();
    openEvents();
    markReady();
  })().catch((e) => { reportError(e); markReady(); });
}
