// Server frames received on the WebSocket.

import { PRESENCE_TTL_MS } from './config.js';
import { toast } from './dom.js';
import { conn, currentConv, findSession, state } from './state.js';
import { bumpSession } from './sessions.js';
import { renderHeader, renderPending, renderPresence, renderSessions, updateEmpty } from './render.js';
import { addMessage, applyDelta, applyHandoff, applyRunStatus, applyTool } from './conversation.js';
import { dropOutbox, onSendError } from './outbox.js';
import { onSocketUnauthenticated, renewSocketToken, subscribe } from './connection.js';
import { onQueueError, onQueueFrame } from './operator.js';

export function handleFrame(f) {
  switch (f.type) {
    case 'ack':
      onAck(f);
      break;
    case 'message':
      onMessageFrame(f);
      break;
    case 'run':
      onRunFrame(f);
      break;
    case 'delta':
      onDeltaFrame(f);
      break;
    case 'error':
      onErrorFrame(f);
      break;
    case 'subscribed':
      conn.confirming.delete(f.session_id);
      break;
    case 'session':
      onSessionFrame(f);
      break;
    case 'handoff':
      onHandoffFrame(f);
      break;
    case 'tool_call':
    case 'tool_result':
      onToolFrame(f);
      break;
    case 'presence':
      onPresenceFrame(f);
      break;
    case 'queue':
      onQueueFrame(f);
      break;
    case 'unsubscribed':
    case 'pong':
    case 'authenticated':
      break;
    default:
      break; // unknown frame types are ignored (the contract is additive)
  }
}

// The session's status, agent or the person holding it changed.
function onSessionFrame(f) {
  for (const meta of [findSession(f.session_id), state.convs.get(f.session_id)?.meta]) {
    if (!meta) continue;
    if (f.status) meta.status = f.status;
    if (f.agent) meta.agent = f.agent;
    meta.assignee = f.assignee || null;
  }
  renderSessions();
  if (currentConv()?.id === f.session_id) {
    renderHeader();
    for (const item of state.outbox.values()) renderPending(item);
    if (f.status !== 'pending_human') clearPresence();
  }
}

// An agent handed the conversation on: a note in the transcript.
function onHandoffFrame(f) {
  const conv = subscribedConv(f.session_id);
  if (conv && f.run_id) applyHandoff(conv, f);
}

function onToolFrame(f) {
  const conv = subscribedConv(f.session_id);
  if (conv && f.run_id && f.call_id) applyTool(conv, f);
}

// A person is typing (not shown to that person themselves).
let presenceTimer = null;
function clearPresence() {
  clearTimeout(presenceTimer);
  presenceTimer = null;
  renderPresence('');
}

function onPresenceFrame(f) {
  if (!subscribedConv(f.session_id) || currentConv()?.id !== f.session_id) return;
  if (f.name === state.me.username) return;
  if (!f.typing) {
    clearPresence();
    return;
  }
  renderPresence(`${f.name} is typing…`);
  clearTimeout(presenceTimer);
  presenceTimer = setTimeout(clearPresence, PRESENCE_TTL_MS);
}

// Events are only applied for the session subscribed on this socket.
function subscribedConv(sessionId) {
  if (!sessionId || !conn.subscribed.has(sessionId)) return null;
  return state.convs.get(sessionId) || null;
}

function onAck(f) {
  const item = dropOutbox(f.client_msg_id);
  const sessionId = f.session_id || (item && item.frame.session_id);
  if (!sessionId) return;
  bumpSession(sessionId);
  const conv = state.convs.get(sessionId);
  if (!conv || conv.id !== state.currentId) return;
  // Show the committed message right away; the stream copy replaces it.
  const seq = Number(f.seq);
  if (f.message && typeof f.message.seq === 'number') {
    addMessage(conv, f.message, false);
  } else if (item && seq > 0) {
    addMessage(conv, {
      id: f.message_id,
      session_id: sessionId,
      seq,
      role: 'user',
      agent: '',
      content: item.frame.content,
      created_at: new Date().toISOString(),
      client_msg_id: f.client_msg_id,
      run_id: f.run_id,
    }, false);
  }
  if (f.run_id && seq > 0) conv.runSeq.set(f.run_id, seq);
  if (f.run_id && !f.duplicate && !conv.finishedRuns.has(f.run_id) && !conv.runs.has(f.run_id)) {
    applyRunStatus(conv, { run_id: f.run_id, status: 'queued' });
  }
  updateEmpty();
}

function onMessageFrame(f) {
  const conv = subscribedConv(f.session_id || (f.message && f.message.session_id));
  if (!conv || !f.message) return;
  addMessage(conv, f.message, true);
  if (f.message.role === 'human') clearPresence();
  const meta = findSession(conv.id);
  if (meta && f.message.seq > (meta.last_seq || 0)) meta.last_seq = f.message.seq;
}

function onRunFrame(f) {
  const conv = subscribedConv(f.session_id);
  if (conv && f.run_id) applyRunStatus(conv, f);
}

function onDeltaFrame(f) {
  const conv = subscribedConv(f.session_id);
  if (conv && f.run_id) applyDelta(conv, f);
}

function onErrorFrame(f) {
  if (f.code === 'unauthenticated') {
    onSocketUnauthenticated();
    return;
  }
  if (f.code === 'token_expired') {
    renewSocketToken();
    return;
  }
  const item = f.client_msg_id ? state.outbox.get(f.client_msg_id) : null;
  if (item) {
    onSendError(item, f);
    return;
  }
  if (!f.session_id && !f.client_msg_id && onQueueError(f)) return;
  // An error naming a subscribed session is about its subscription when the
  // `subscribed` reply is still due (the subscribe failed), or when it says
  // `unavailable` (the server ended the stream, e.g. this client fell
  // behind). Other errors (a refused cancel, ...) leave it alone.
  const sid = f.session_id;
  const aboutSubscription = sid && conn.subscribed.has(sid) && (conn.confirming.has(sid) || f.code === 'unavailable');
  if (aboutSubscription) {
    conn.subscribed.delete(sid);
    conn.confirming.delete(sid);
    const conv = state.convs.get(sid);
    const transient = ['unavailable', 'internal', 'rate_limited', 'busy'].includes(f.code);
    if (conv && conv.id === state.currentId && transient) {
      // Resubscribe from the last seq seen: nothing is lost.
      const delay = Number(f.retry_after_ms) > 0 ? Number(f.retry_after_ms) : 1000 + Math.random() * 1000;
      clearTimeout(conv.resubTimer);
      conv.resubTimer = setTimeout(() => {
        conv.resubTimer = null;
        if (conv.id === state.currentId && conv.ready) subscribe(conv);
      }, delay);
      return; // retried
    }
  }
  toast(f.message || `Error: ${f.code}`);
}
