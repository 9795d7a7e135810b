// Agents, the session list, routing, opening and loading conversations.

import { HISTORY_PAGE, SESSIONS_PAGE, SESSIONS_POLL_MS } from './config.js';
import { el, toast } from './dom.js';
import { conn, currentConv, findSession, getConv, state } from './state.js';
import { api, enc } from './api.js';
import { closeSidebar, renderAgents, renderConversation, renderHeader, renderSessions, scrollToBottom, updateEmpty, withScroll } from './render.js';
import { addMessage, currentSeen, restoreStopped } from './conversation.js';
import { sendFrame, subscribe } from './connection.js';
import { noticeSessions } from './unread.js';
import { renderModeLinks, renderQueue, resetOperatorView, startQueue, stopQueue } from './operator.js';
import { openMenu } from './actions.js';

// ---------------------------------------------------------------------------
// Agents
// ---------------------------------------------------------------------------
export async function loadAgents() {
  const epoch = state.epoch;
  let agents = [];
  try {
    const data = await api('GET', '/agents');
    agents = (data && data.agents) || [];
  } catch (e) {
    if (e.status === 401) return;
  }
  if (epoch !== state.epoch) return;
  state.agents = agents;
  renderAgents();
}

// ---------------------------------------------------------------------------
// Session list (sidebar)
// ---------------------------------------------------------------------------
export async function loadSessions(more) {
  const epoch = state.epoch;
  const q = new URLSearchParams({ limit: String(SESSIONS_PAGE) });
  if (more && state.nextCursor) q.set('cursor', state.nextCursor);
  try {
    const data = await api('GET', `/sessions?${q}`);
    if (epoch !== state.epoch) return;
    const list = (data && data.sessions) || [];
    state.sessions = more ? mergeSessions(state.sessions, list) : mergeSessions(localOnlySessions(list), list);
    state.nextCursor = (data && data.next_cursor) || null;
    noticeSessions(list);
    renderSessions();
  } catch (e) {
    if (e.status !== 401 && epoch === state.epoch) toast(e.message);
  }
}

// Sessions created in this tab before the list arrived.
function localOnlySessions(list) {
  const ids = new Set(list.map((s) => s.id));
  return state.sessions.filter((s) => s.local && !ids.has(s.id));
}

function mergeSessions(a, b) {
  const seen = new Set(a.map((s) => s.id));
  return a.concat(b.filter((s) => !seen.has(s.id)));
}

// Move a session to the top after activity.
export function bumpSession(id) {
  const i = state.sessions.findIndex((s) => s.id === id);
  if (i < 0) return;
  const [s] = state.sessions.splice(i, 1);
  s.updated_at = new Date().toISOString();
  state.sessions.unshift(s);
  renderSessions();
}

export function onSessionListClick(ev) {
  const more = ev.target.closest('[data-menu-for]');
  if (more) {
    openMenu(more.dataset.menuFor, more);
    return;
  }
  const btn = ev.target.closest('.session-item');
  if (btn) navigate(btn.dataset.id);
}

// The list refreshes now and then (unread markers for chats not open).
let listTimer = null;
export function startListRefresh() {
  clearInterval(listTimer);
  listTimer = setInterval(() => {
    if (state.auth && state.mode === 'chat' && document.visibilityState === 'visible') loadSessions(false);
  }, SESSIONS_POLL_MS);
}

// ---------------------------------------------------------------------------
// Routing: #/s/<id> opens a chat, no hash is a new chat; #/operator is the
// operator console and #/operator/s/<id> a chat in it
// ---------------------------------------------------------------------------
function decodeId(raw) {
  try {
    return decodeURIComponent(raw);
  } catch (_) {
    return null;
  }
}

export function navigate(id) {
  const hash = state.mode === 'operator' ? (id ? `#/operator/s/${enc(id)}` : '#/operator') : id ? `#/s/${enc(id)}` : '';
  if (hash !== location.hash) history.pushState(null, '', hash || location.pathname + location.search);
  route();
}

function setMode(mode) {
  if (state.mode === mode) return;
  leaveCurrent();
  state.mode = mode;
  if (mode === 'operator') {
    startQueue();
  } else {
    stopQueue();
    el.sessionsEmpty.textContent = 'No conversations yet.';
    renderSessions();
  }
  renderModeLinks();
}

export function route() {
  if (!state.auth) return;
  const op = /^#\/operator(?:\/s\/(.+))?$/.exec(location.hash);
  if (op && state.me.operator) {
    setMode('operator');
    const id = op[1] ? decodeId(op[1]) : null;
    if (id) openSession(id);
    else showDraft();
    renderQueue();
  } else {
    setMode('chat');
    const m = /^#\/s\/(.+)$/.exec(location.hash);
    const id = m ? decodeId(m[1]) : null;
    if (id) openSession(id);
    else showDraft();
  }
  resetOperatorView();
  closeSidebar();
}

// ---------------------------------------------------------------------------
// Opening / leaving conversations
// ---------------------------------------------------------------------------
function leaveCurrent() {
  const conv = currentConv();
  if (conv) {
    if (conn.subscribed.has(conv.id)) sendFrame({ type: 'unsubscribe', session_id: conv.id });
    conn.subscribed.delete(conv.id);
    conn.confirming.delete(conv.id);
    conv.ready = false;
    conv.runs.clear();
    clearTimeout(conv.retryTimer);
    clearTimeout(conv.resubTimer);
    conv.retryTimer = null;
    conv.resubTimer = null;
  }
  state.currentId = null;
}

function showDraft() {
  leaveCurrent();
  renderConversation();
}

function openSession(id) {
  if (state.currentId === id) return;
  leaveCurrent();
  state.currentId = id;
  const conv = getConv(id);
  if (!conv.meta) conv.meta = findSession(id);
  renderConversation();
  // A session created by this tab a moment ago has no history to load:
  // subscribe at once so the first reply streams in live.
  if (conv.ready) subscribe(conv);
  else loadConversation(conv);
}

// Load session details and the full history, then subscribe for live events.
export async function loadConversation(conv) {
  if (conv.loading) return;
  clearTimeout(conv.retryTimer);
  conv.retryTimer = null;
  conv.loading = true;
  const epoch = state.epoch;
  const stillCurrent = () => epoch === state.epoch && state.currentId === conv.id;
  try {
    if (!conv.meta) {
      conv.meta = findSession(conv.id) || (await api('GET', `/sessions/${enc(conv.id)}`));
      if (stillCurrent()) renderHeader();
    }
    await loadHistory(conv);
    if (!stillCurrent()) return;
    restoreStopped(conv);
    conv.ready = true;
    if (document.visibilityState === 'visible') currentSeen();
    renderSessions();
    updateEmpty();
    scrollToBottom();
    subscribe(conv);
  } catch (e) {
    if (!stillCurrent() || e.status === 401) return;
    toast(e.message);
    if (e.status === 404 || e.status === 403) {
      state.convs.delete(conv.id);
      history.replaceState(null, '', location.pathname + location.search);
      route();
    } else {
      // Network or server trouble: try again, the view must not stay empty.
      conv.retryTimer = setTimeout(() => {
        conv.retryTimer = null;
        if (stillCurrent() && !conv.ready) loadConversation(conv);
      }, 3000);
    }
  } finally {
    conv.loading = false;
  }
}

// Pages through GET /messages (ascending seq) from the start.
async function loadHistory(conv) {
  let after = 0;
  for (;;) {
    const q = new URLSearchParams({ limit: String(HISTORY_PAGE), after_seq: String(after) });
    const data = await api('GET', `/sessions/${enc(conv.id)}/messages?${q}`);
    const msgs = (data && data.messages) || [];
    withScroll(() => {
      for (const m of msgs) addMessage(conv, m, true);
    });
    if (msgs.length < HISTORY_PAGE) return;
    const last = msgs[msgs.length - 1].seq;
    if (!(last > after)) return;
    after = last;
  }
}

// Create a session for the first message of a draft chat.
export async function createSession(firstText) {
  const body = {};
  const agent = el.agentSelect.value;
  if (agent) body.agent = agent;
  const firstLine = firstText.split('\n')[0].trim();
  if (firstLine) body.title = firstLine.length > 60 ? `${firstLine.slice(0, 57)}…` : firstLine;
  const session = await api('POST', '/sessions', body);
  session.local = true;
  state.sessions = mergeSessions([session], state.sessions);
  renderSessions();
  const conv = getConv(session.id);
  conv.meta = session;
  conv.ready = true; // brand new: nothing stored yet, lastSeq 0
  return session;
}
