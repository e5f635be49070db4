// bertsweep dashboard, the entry module: routes on location.pathname to a page module.
// "/" (studies), "/studies/{name}" (study), "/studies/{name}/trials/{n}" (trial).
// Native ES modules, no dependencies, no build step: the coordinator serves each file of
// assets/js/ from its binary at /assets/{file} (see pages.rs).
// All data goes into the DOM through createElement/textContent: study names, params and errors are user input.

import { h, setKids, markReady } from './dom.js';
import { reportError } from './api.js';
import { loadSession } from './session.js';
import { studiesPage } from './studies-page.js';
import { studyPage } from './study-page.js';
import { trialPage } from './trial-page.js';

function route() {
  const app = document.getElementById('app');
  const raw = location.pathname.split('/').filter((s) => s !== '');
  let parts;
  try {
    parts = raw.map((s) => decodeURIComponent(s));
  } catch (_) {
    parts = null;
  }
  loadSession();
  if (parts && parts.length === 0) return studiesPage(app);
  if (parts && parts[0] === 'studies' && parts.length === 2) return studyPage(app, parts[1]);
  if (parts && parts[0] === 'studies' && parts.length === 4 && parts[2] === 'trials' && /^\d+$/.test(parts[3])) {
    return trialPage(app, parts[1], Number(parts[3]));
  }
  document.title = 'Not found · bertsweep';
  setKids(app, h('div', { class: 'card' },
    h('p', { class: 'chart-msg' }, 'No such page. ', h('a', { href: '/' }, 'Back to the studies.'))));
  markReady();
  return undefined;
}

function start() {
  try {
    route();
  } catch (e) {
    reportError(e, 'internal error');
    markReady();
  }
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
else start();
