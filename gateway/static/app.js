// Chat page: REST for auth/sessions/history, one WebSocket for live events.
// Plain JS modules, no build step. All user-provided text goes through textContent.
//
// This entry wires the DOM events and boots; the modules under /js/ hold the
// rest, one concern each.

import { KEY_AGENT, KEY_AUTH } from './js/config.js';
import { el } from './js/dom.js';
import { loadJson, saveJson } from './js/util.js';
import { conn, state } from './js/state.js';
import { logout, onStorage, showAuth, startApp, submitAuth, toggleAuthMode } from './js/auth.js';
import { loadSessions, navigate, onSessionListClick, route } from './js/sessions.js';
import { closeSidebar, openSidebar, renderAgentDescription, renderSessions, renderTitle } from './js/render.js';
import { cancelActiveRun, currentSeen } from './js/conversation.js';
import { onPendingClick } from './js/outbox.js';
import { isOpen, reconnectNow, setConnStatus } from './js/connection.js';
import { onInput, onInputKeydown, onSubmit } from './js/composer.js';
import { onCopyClick } from './js/markdown.js';
import { closeMenu, onHandoffBack, onHeaderActions, onMenuClick, onMenuKeydown } from './js/actions.js';
import { operatorAction } from './js/operator.js';
import { onVisible } from './js/unread.js';

function startNewChat() {
  if (state.mode === 'operator') location.hash = '#/';
  navigate(null);
  el.input.focus();
}

function bindEvents() {
  el.authForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    submitAuth(el.authForm.dataset.mode === 'signup');
  });
  el.registerBtn.addEventListener('click', toggleAuthMode);
  el.logoutBtn.addEventListener('click', logout);
  el.newChatBtn.addEventListener('click', startNewChat);
  el.closedNewBtn.addEventListener('click', startNewChat);
  el.handoffNewBtn.addEventListener('click', startNewChat);
  el.handoffBackBtn.addEventListener('click', onHandoffBack);
  el.claimBtn.addEventListener('click', () => operatorAction('claim'));
  el.actionsBtn.addEventListener('click', onHeaderActions);
  el.actionMenu.addEventListener('click', onMenuClick);
  el.actionMenu.addEventListener('keydown', onMenuKeydown);
  el.messages.addEventListener('click', onCopyClick);
  document.addEventListener('click', (ev) => {
    if (!el.actionMenu.hidden && !el.actionMenu.contains(ev.target) && !ev.target.closest('[data-menu-for], #actions-btn')) closeMenu();
  });
  el.sessionList.addEventListener('click', onSessionListClick);
  el.moreSessionsBtn.addEventListener('click', () => loadSessions(true));
  el.agentSelect.addEventListener('change', () => {
    saveJson(KEY_AGENT, el.agentSelect.value);
    renderAgentDescription();
  });
  el.composer.addEventListener('submit', onSubmit);
  el.input.addEventListener('keydown', onInputKeydown);
  el.input.addEventListener('input', onInput);
  el.cancelBtn.addEventListener('click', cancelActiveRun);
  el.pendingList.addEventListener('click', onPendingClick);
  el.menuBtn.addEventListener('click', openSidebar);
  el.scrim.addEventListener('click', closeSidebar);
  window.addEventListener('popstate', route);
  window.addEventListener('storage', onStorage);
  window.addEventListener('online', reconnectNow);
  window.addEventListener('offline', () => {
    if (state.auth && !isOpen()) setConnStatus('offline', 'Offline — waiting for network');
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState !== 'visible' || !state.auth) return;
    onVisible();
    currentSeen();
    renderSessions();
    renderTitle();
    if (!conn.ws && !conn.connecting) reconnectNow();
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') {
      closeMenu();
      closeSidebar();
    }
  });
}

// ---------------------------------------------------------------------------
// Boot: reuse stored tokens so a reload keeps you logged in
// ---------------------------------------------------------------------------
function boot() {
  bindEvents();
  const stored = loadJson(KEY_AUTH, null);
  if (stored && stored.access_token) {
    state.auth = stored;
    startApp();
  } else {
    showAuth('', '');
  }
}

boot();
