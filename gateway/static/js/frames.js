// Server frames received on the WebSocket.

import { toast } from './dom.js';
import { conn, currentConv, findSession, state } from './state.js';
import { bumpSession } from './sessions.js';
import { renderHeader, renderSessions, updateEmpty } from './render.js';
import { addMessage, applyDelta, applyRunStatus } from './conversation.js';
import { dropOutbox, onSendError } from './outbox.js';
import { onSocketUnauthenticated, renewSocketToken, subscribe } from './connection.js';

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
    case 'unsubscribed':
    case 'pong':
    case 'authenticated':
    case 'tool_call':
    case 'tool_result':
      break;
    default:
      break; // unknown frame types are ignored (the contract is additive)
  }
}

// The session's status or agent changed (a handoff, a person taking over).
function onSessionFrame(f) {
  for (const meta of [findSession(f.session_id), state.convs.get(f.session_id)?.meta]) {
    if (!meta) continue;
    if (f.status) meta.status = f.status;
    if (f.agent) meta.agent = f.agent;
  }
  renderSessions();
  if (currentConv()?.id === f.session_id) renderHeader();
}

// An agent handed the conversation on: say so briefly.
function onHandoffFrame(f) {
  if (currentConv()?.id !== f.session_id) return;
  const to = f.to_agent === 'human' ? 'a member of the team' : f.to_agent;
  toast(`Handed over to ${to}`, false);
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
  if (f.run_id && !f.duplicate && !conv.finishedRuns.has(f.run_id) && !conv.runs.has(f.run_id)) {
    applyRunStatus(conv, { run_id: f.run_id, status: 'queued' });
  }
  updateEmpty();
}

function onMessageFrame(f) {
  const conv = subscribedConv(f.session_id || (f.message && f.message.session_id));
  if (conv && f.message) addMessage(conv, f.message, true);
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
