// The operator console (#/operator): the live queue of chats waiting for a
// person in the sidebar (pushed by the server), taking one, answering as a person with typing
// presence, handing it back or resolving it. Shown only to users whose
// account has the operator role; the server checks every call.

import { DEFAULT_LIMITS, TYPING_EVERY_MS, TYPING_IDLE_MS, WAIT_REFRESH_MS } from './config.js';
import { el, make, toast } from './dom.js';
import { state, currentConv, getConv } from './state.js';
import { api, enc } from './api.js';
import { uuid } from './util.js';
import { sendFrame } from './connection.js';
import { renderBars, renderHeader, sessionTitle } from './render.js';
import { addMessage } from './conversation.js';

// ---------------------------------------------------------------------------
// Who is logged in
// ---------------------------------------------------------------------------
export async function loadMe() {
  const epoch = state.epoch;
  try {
    const me = await api('GET', '/me');
    if (epoch !== state.epoch || !me) return;
    state.me = { username: me.username, operator: Boolean(me.operator), limits: me.limits || DEFAULT_LIMITS };
  } catch (_) {
    state.me = { username: state.auth ? state.auth.username : '', operator: false, limits: DEFAULT_LIMITS };
  }
  renderModeLinks();
}

export function renderModeLinks() {
  el.consoleLink.hidden = !state.me.operator || state.mode === 'operator';
  el.chatsLink.hidden = state.mode !== 'operator';
  el.newChatBtn.hidden = state.mode === 'operator';
  document.body.classList.toggle('operator-mode', state.mode === 'operator');
}

// ---------------------------------------------------------------------------
// The queue: pushed over the WebSocket (`watch_queue`: the whole queue, then
// each change). Only while the socket is down is it read over REST, once.
// ---------------------------------------------------------------------------
let watching = false;
let waitTimer = null;
let rewatchTimer = null;

export function startQueue() {
  if (watching) return;
  watching = true;
  refreshQueue();
  // Wait times age without any change to the queue.
  waitTimer = setInterval(renderQueue, WAIT_REFRESH_MS);
}

export function stopQueue() {
  if (watching) sendFrame({ type: 'unwatch_queue' });
  watching = false;
  clearInterval(waitTimer);
  clearTimeout(rewatchTimer);
  waitTimer = null;
  rewatchTimer = null;
  state.queue = [];
}

// A new socket: watch again (its first frame is the whole queue).
export function onQueueSocketOpen() {
  if (watching) sendFrame({ type: 'watch_queue' });
}

// The server stopped the watch (an error frame naming no session or message).
export function onQueueError(f) {
  if (!watching) return false;
  if (f.code === 'forbidden') {
    notOperator();
    return true;
  }
  clearTimeout(rewatchTimer);
  const delay = Number(f.retry_after_ms) > 0 ? Number(f.retry_after_ms) : 2000 + Math.random() * 2000;
  rewatchTimer = setTimeout(() => {
    rewatchTimer = null;
    if (watching) refreshQueue();
  }, delay);
  return false;
}

function notOperator() {
  stopQueue();
  toast('Your account is not an operator.');
  location.hash = '#/';
}

// The longest waiting first, as the server orders it.
function byWait(a, b) {
  return String(a.waiting_since || '').localeCompare(String(b.waiting_since || '')) || String(a.id).localeCompare(String(b.id));
}

export function onQueueFrame(f) {
  if (!watching || state.mode !== 'operator') return;
  const entries = Array.isArray(f.sessions) ? f.sessions : [];
  if (f.snapshot) {
    state.queue = entries;
  } else {
    const gone = new Set([...(f.removed || []), ...entries.map((s) => s.id)]);
    state.queue = state.queue.filter((s) => !gone.has(s.id)).concat(entries).sort(byWait);
  }
  for (const s of entries) {
    const conv = state.convs.get(s.id);
    if (conv) conv.meta = Object.assign(conv.meta || {}, s);
  }
  renderQueue();
  const open = currentConv();
  if (open && (entries.some((s) => s.id === open.id) || (f.removed || []).includes(open.id))) renderHeader();
}

// Watches the queue again (the server answers with all of it), or reads it
// over REST while the socket is down.
function refreshQueue() {
  if (!sendFrame({ type: 'watch_queue' })) loadQueue();
}

async function loadQueue() {
  const epoch = state.epoch;
  try {
    const data = await api('GET', '/operator/sessions');
    if (epoch !== state.epoch || state.mode !== 'operator') return;
    state.queue = (data && data.sessions) || [];
    renderQueue();
  } catch (e) {
    if (e.status === 403) notOperator();
  }
}

function waited(since) {
  const ms = Date.now() - new Date(since).getTime();
  if (!(ms >= 0)) return '';
  const min = Math.floor(ms / 60000);
  if (min < 1) return 'waiting <1 min';
  if (min < 60) return `waiting ${min} min`;
  return `waiting ${Math.floor(min / 60)} h ${min % 60} min`;
}

export function renderQueue() {
  if (state.mode !== 'operator') return;
  const items = state.queue.map((s) => {
    const li = make('li', 'session-row');
    const btn = make('button', 'session-item');
    btn.type = 'button';
    btn.dataset.id = s.id;
    if (s.id === state.currentId) {
      btn.classList.add('active');
      btn.setAttribute('aria-current', 'page');
    }
    const meta = [s.owner, waited(s.waiting_since), s.assignee ? `taken by ${s.assignee}` : 'not taken'].filter(Boolean).join(' · ');
    btn.append(make('span', 'session-title', sessionTitle(s)), make('span', 'session-meta', meta));
    li.append(btn);
    return li;
  });
  el.sessionList.replaceChildren(...items);
  el.sessionsEmpty.textContent = 'Nobody is waiting for a person.';
  el.sessionsEmpty.hidden = state.queue.length > 0;
  el.moreSessionsBtn.hidden = true;
}

// ---------------------------------------------------------------------------
// Acting on the open chat
// ---------------------------------------------------------------------------
function openId() {
  return state.mode === 'operator' ? state.currentId : null;
}

function applySession(session) {
  const conv = getConv(session.id);
  conv.meta = Object.assign(conv.meta || {}, session);
  const queued = state.queue.find((s) => s.id === session.id);
  if (queued) Object.assign(queued, session);
  renderQueue();
  if (currentConv() === conv) renderHeader();
}

export async function operatorAction(act) {
  const id = openId();
  if (!id) return;
  const path = { claim: 'claim', 'hand-back': 'hand-back', 'op-resolve': 'resolve' }[act];
  if (!path) return;
  try {
    const session = await api('POST', `/operator/sessions/${enc(id)}/${path}`, {});
    applySession(session);
    if (act === 'claim') el.input.focus();
    else toast(act === 'hand-back' ? 'Handed back to the assistant.' : 'Chat resolved.', false);
  } catch (e) {
    if (e.status !== 401) toast(e.message);
    refreshQueue();
  }
}

// Sends the operator's message; true when stored.
export async function operatorSend(content) {
  const id = openId();
  if (!id) return false;
  stopTyping();
  try {
    const message = await api('POST', `/operator/sessions/${enc(id)}/messages`, { content, client_msg_id: uuid() });
    const conv = state.convs.get(id);
    if (conv && message) addMessage(conv, message, false);
    return true;
  } catch (e) {
    if (e.status !== 401) toast(e.message);
    return false;
  }
}

// ---------------------------------------------------------------------------
// Typing presence: "typing" at most every few seconds while keys are
// pressed, "stopped" after a pause or a send
// ---------------------------------------------------------------------------
let lastTyping = 0;
let idleTimer = null;

function postTyping(id, typing) {
  api('POST', `/operator/sessions/${enc(id)}/typing`, { typing }).catch(() => {});
}

export function operatorTyping() {
  const id = openId();
  const conv = currentConv();
  if (!id || !conv || !conv.meta || conv.meta.assignee !== state.me.username) return;
  const now = Date.now();
  if (now - lastTyping > TYPING_EVERY_MS) {
    lastTyping = now;
    postTyping(id, true);
  }
  clearTimeout(idleTimer);
  idleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  clearTimeout(idleTimer);
  idleTimer = null;
  if (!lastTyping) return;
  lastTyping = 0;
  const id = openId();
  if (id) postTyping(id, false);
}

export function resetOperatorView() {
  stopTyping();
  renderBars();
}
