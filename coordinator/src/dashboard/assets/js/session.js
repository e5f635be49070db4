// bertsweep dashboard: the session (whether this coordinator asks for a login, the role, whether
// it may stop a study, the coordinator's version), read once per page, and the top bar's
// version and log-out box.

import { api, reportError } from './api.js';
import { h } from './dom.js';

export const session = { auth: false, role: null, can_stop: false, version: '' };
let sessionPromise = null;

export function loadSession() {
  if (!sessionPromise) {
    sessionPromise = api('/api/session')
      .then((s) => {
        session.auth = !!s.auth;
        session.role = typeof s.role === 'string' ? s.role : null;
        // Only an admin's session is offered the Stop button (a viewer's would be refused).
        session.can_stop = !!s.can_stop;
        session.version = typeof s.version === 'string' ? s.version : '';
        renderSessionBox();
        return session;
      })
      .catch((e) => { reportError(e); return session; });
  }
  return sessionPromise;
}

function renderSessionBox() {
  const box = document.getElementById('session-box');
  const ver = document.getElementById('version');
  if (ver) ver.textContent = session.version ? `v${session.version}` : '';
  if (!box) return;
  box.replaceChildren(); // empty
  if (session.auth) {
    box.append(h('form', { method: 'post', action: '/logout' },
      session.role ? h('span', { class: 'session-role', id: 'session-role' }, session.role) : null,
      h('button', { class: 'btn', type: 'submit' }, 'Log out')));
  }
}
