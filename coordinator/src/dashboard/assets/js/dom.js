// bertsweep dashboard: building the DOM. All data goes in through createElement/textContent
// (study names, params and errors are user input), never as HTML. Also the state badges, and the
// body attributes the browser tests wait on (data-ready, data-render-ms, data-events, data-live).

import { STATES, TIED_TITLE } from './format.js';

/** createElement with attributes and children (strings become text nodes, never HTML). */
export function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

/** replaceChildren without the null/false placeholders of conditional children. */
export function setKids(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c != null && c !== false));
}

function stateClass(state) {
  return STATES.includes(state) ? `st-${state.toLowerCase()}` : 'st-unknown';
}

export function badge(state) {
  return h('span', { class: `badge ${stateClass(state)}` }, state || '?');
}

/** The mark of a trial or configuration whose interval overlaps the best's. */
export function tiedBadge(title) {
  return h('span', { class: 'badge tied', title: title || TIED_TITLE }, '≈ best');
}

export function setBodyAttr(name, value) {
  document.body.setAttribute(name, String(value));
}

export function markReady() {
  setBodyAttr('data-render-ms', Math.round(performance.now()));
  setBodyAttr('data-ready', '1');
}
