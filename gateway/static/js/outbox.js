// Outbox: messages sent but not yet acknowledged (persisted across reloads).

import { DEFAULT_LIMITS, KEY_OUTBOX, MAX_SEND_RETRIES, RETRYABLE_SEND } from './config.js';
import { loadJson, saveJson, uuid } from './util.js';
import { conn, state, view } from './state.js';
import { renderPending, scrollToBottom, updateEmpty } from './render.js';
import { sendFrame } from './connection.js';

const utf8 = new TextEncoder();

function kib(bytes) {
  return `${Math.ceil(bytes / 1024)} KB`;
}

// Why `frame` cannot be sent, or '' when it can: the content and the whole
// frame must fit the server's limits (a frame over the WebSocket limit would
// make the server close the socket).
export function sizeProblem(frame) {
  const limits = state.me.limits || DEFAULT_LIMITS;
  const content = utf8.encode(frame.content).length;
  if (content > limits.max_content_bytes) {
    return `Message too long (${kib(content)}; the limit is ${kib(limits.max_content_bytes)}).`;
  }
  const whole = utf8.encode(JSON.stringify(frame)).length;
  if (whole > limits.max_ws_frame_bytes) {
    return `Message too long (${kib(whole)} to send; the limit is ${kib(limits.max_ws_frame_bytes)}).`;
  }
  return '';
}

// An item that can never be sent: shown failed with the reason, removable,
// and skipped so the rest of the queue proceeds.
function refuse(item, reason) {
  clearTimeout(item.timer);
  item.timer = null;
  item.status = 'failed';
  item.permanent = true;
  item.error = reason;
}

function persistOutbox() {
  if (!state.auth) return;
  const items = Array.from(state.outbox.values()).map((i) => ({ frame: i.frame, status: i.status, error: i.error, permanent: Boolean(i.permanent) }));
  saveJson(KEY_OUTBOX, items.length ? { username: state.auth.username, items } : null);
}

export function restoreOutbox() {
  state.outbox.clear();
  const saved = loadJson(KEY_OUTBOX, null);
  if (!saved || !Array.isArray(saved.items) || saved.username !== state.auth.username) {
    saveJson(KEY_OUTBOX, null);
    return;
  }
  for (const i of saved.items) {
    if (!i || !i.frame || !i.frame.client_msg_id) continue;
    const item = { frame: i.frame, status: i.status === 'failed' ? 'failed' : 'sending', error: i.error || '', permanent: Boolean(i.permanent), tries: 0, timer: null, sentOn: null };
    const problem = sizeProblem(i.frame);
    if (problem) refuse(item, problem);
    state.outbox.set(i.frame.client_msg_id, item);
  }
  persistOutbox();
}

// The server closed the socket because a frame was too large (1009): the
// largest message sent on it and not acknowledged is the one it refused.
export function onFrameRefused(ws) {
  let culprit = null;
  for (const item of state.outbox.values()) {
    if (item.sentOn !== ws || item.status !== 'sending') continue;
    if (!culprit || item.frame.content.length > culprit.frame.content.length) culprit = item;
  }
  if (!culprit) return;
  refuse(culprit, 'Message too large for the server.');
  persistOutbox();
  renderPending(culprit);
}

export function queueSend(sessionId, content) {
  const frame = { type: 'send', session_id: sessionId, client_msg_id: uuid(), content };
  const item = { frame, status: 'sending', error: '', permanent: false, tries: 0, timer: null, sentOn: null };
  state.outbox.set(frame.client_msg_id, item);
  persistOutbox();
  renderPending(item);
  updateEmpty();
  scrollToBottom();
  // If the socket is down or the session not yet subscribed, flushOutbox()
  // sends it once it is.
  if (readyToSend(frame.session_id)) sendItem(item);
}

// Send an outbox item once per socket (a resend on a new socket is
// deduplicated by the server through its client_msg_id).
function sendItem(item) {
  if (item.sentOn && item.sentOn === conn.ws) return;
  if (sendFrame(item.frame)) item.sentOn = conn.ws;
}

// The open session is subscribed before its messages go out, so the run's
// live events (deltas) are seen as they are produced. Messages left for
// other sessions go out as soon as the socket is open.
function readyToSend(sessionId) {
  return sessionId !== state.currentId || conn.subscribed.has(sessionId);
}

// Resend everything unacknowledged, same client_msg_id (the server dedupes).
export function flushOutbox() {
  for (const item of state.outbox.values()) {
    if (item.status === 'sending' && !item.timer && readyToSend(item.frame.session_id)) sendItem(item);
  }
}

export function dropOutbox(clientMsgId) {
  const item = state.outbox.get(clientMsgId);
  if (!item) return null;
  clearTimeout(item.timer);
  state.outbox.delete(clientMsgId);
  persistOutbox();
  const node = view.pendingNodes.get(clientMsgId);
  if (node) {
    node.remove();
    view.pendingNodes.delete(clientMsgId);
  }
  return item;
}

function retrySend(clientMsgId) {
  const item = state.outbox.get(clientMsgId);
  if (!item || item.permanent) return;
  clearTimeout(item.timer);
  item.timer = null;
  item.status = 'sending';
  item.error = '';
  item.tries = 0;
  persistOutbox();
  renderPending(item);
  item.sentOn = null;
  if (readyToSend(item.frame.session_id)) sendItem(item);
}

// Send rejected by the server: retry later when it is transient, else show it.
export function onSendError(item, f) {
  const id = item.frame.client_msg_id;
  if (RETRYABLE_SEND.has(f.code) && item.tries < MAX_SEND_RETRIES) {
    item.tries += 1;
    const delay = Number(f.retry_after_ms) > 0 ? Number(f.retry_after_ms) : 1000 * 2 ** item.tries;
    item.error = f.message || f.code;
    clearTimeout(item.timer);
    item.timer = setTimeout(() => {
      item.timer = null;
      if (state.outbox.get(id) !== item || item.status !== 'sending') return;
      item.sentOn = null;
      if (readyToSend(item.frame.session_id)) sendItem(item);
      renderPending(item);
    }, delay);
  } else if (f.code === 'too_large' || f.code === 'invalid') {
    refuse(item, f.message || 'Message not accepted.');
    persistOutbox();
  } else {
    item.status = 'failed';
    item.error = f.message || f.code || 'Message not sent.';
    persistOutbox();
  }
  renderPending(item);
}

export function onPendingClick(ev) {
  const btn = ev.target.closest('button[data-action]');
  if (!btn) return;
  const li = btn.closest('li[data-cid]');
  if (!li) return;
  if (btn.dataset.action === 'retry') retrySend(li.dataset.cid);
  if (btn.dataset.action === 'remove') {
    dropOutbox(li.dataset.cid);
    updateEmpty();
  }
}
