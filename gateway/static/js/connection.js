// WebSocket: connect, reconnect with backoff, ping, subscribe, socket auth.

import { ACTIVE_RUN, API, BACKOFF_MAX_MS, BACKOFF_MIN_MS, PING_MS, STABLE_MS, STALE_MS } from './config.js';
import { el } from './dom.js';
import { conn, currentConv, state, view } from './state.js';
import { api } from './api.js';
import { expireSession, refreshAuth, tokenExpiringSoon } from './auth.js';
import { loadConversation } from './sessions.js';
import { refreshPendingLabels, updateCancel } from './render.js';
import { flushOutbox, onFrameRefused } from './outbox.js';
import { handleFrame } from './frames.js';
import { onQueueSocketOpen } from './operator.js';

export function isOpen() {
  return Boolean(conn.ws) && conn.ws.readyState === WebSocket.OPEN;
}

export function sendFrame(frame) {
  if (!isOpen()) return false;
  try {
    conn.ws.send(JSON.stringify(frame));
    return true;
  } catch (_) {
    return false;
  }
}

export function setConnStatus(status, detail) {
  el.conn.dataset.state = status;
  const text = {
    connected: 'Connected',
    connecting: 'Connecting…',
    reconnecting: 'Reconnecting…',
    offline: 'Offline',
  }[status];
  el.connText.textContent = detail || text;
  el.conn.title = detail || text;
  if (state.auth) refreshPendingLabels();
}

export async function connect() {
  if (!state.auth || conn.ws || conn.connecting) return;
  clearTimeout(conn.reconnectTimer);
  conn.reconnectTimer = null;
  conn.connecting = true;
  try {
    if (tokenExpiringSoon()) {
      const outcome = await refreshAuth(state.auth.access_token);
      if (outcome === 'denied') {
        expireSession();
        return;
      }
    }
    if (!state.auth) return;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    // The token travels as a subprotocol, never in the URL (logs, history).
    const url = `${proto}//${location.host}${API}/ws`;
    const ws = new WebSocket(url, ['chat.v1', `bearer.${state.auth.access_token}`]);
    conn.ws = ws;
    conn.token = state.auth.access_token;
    conn.openedAt = 0;
    setConnStatus(conn.attempt ? 'reconnecting' : 'connecting');
    ws.addEventListener('open', () => onSocketOpen(ws));
    ws.addEventListener('message', (ev) => onSocketMessage(ws, ev));
    ws.addEventListener('close', (ev) => onSocketClose(ws, ev));
  } catch (_) {
    conn.ws = null;
    scheduleReconnect();
  } finally {
    conn.connecting = false;
  }
}

function onSocketOpen(ws) {
  if (ws !== conn.ws) return;
  conn.openedAt = Date.now();
  conn.lastFrameAt = Date.now();
  conn.subscribed.clear();
  conn.confirming.clear();
  setConnStatus('connected');
  startPing();
  // Re-subscribe first, then resend unacknowledged messages.
  const conv = currentConv();
  if (conv) {
    if (conv.ready) subscribe(conv);
    else loadConversation(conv);
  }
  flushOutbox();
  onQueueSocketOpen();
  refreshPendingLabels();
}

function onSocketMessage(ws, ev) {
  if (ws !== conn.ws) return;
  conn.lastFrameAt = Date.now();
  let frame;
  try {
    frame = JSON.parse(ev.data);
  } catch (_) {
    return;
  }
  if (frame && typeof frame.type === 'string') handleFrame(frame);
}

function onSocketClose(ws, ev) {
  if (ws !== conn.ws) return;
  const lived = conn.openedAt ? Date.now() - conn.openedAt : 0;
  conn.ws = null;
  stopPing();
  conn.subscribed.clear();
  conn.confirming.clear();
  if (!state.auth) return;
  if (lived >= STABLE_MS) conn.attempt = 0;
  // 1009: a frame was over the server's limit. That message is refused, not
  // the connection: mark it failed and carry on with the rest at once.
  if (ev.code === 1009) {
    onFrameRefused(ws);
    conn.attempt = 0;
  }
  // A refused upgrade (e.g. an expired token) is invisible to the browser:
  // probe the REST API, which refreshes the token (then reconnect at once)
  // or goes back to the login form.
  if (!conn.openedAt || ev.code === 4001) probeAuth();
  refreshPendingLabels();
  scheduleReconnect(ev.code === 1009 ? '' : ev.reason);
}

function probeAuth() {
  api('GET', '/sessions?limit=1')
    .then(() => {
      // token was refreshed and no socket uses it yet
      if (state.auth && conn.token !== state.auth.access_token) reconnectNow();
    })
    .catch(() => {});
}

function scheduleReconnect(reason) {
  if (!state.auth || conn.reconnectTimer) return;
  if (!navigator.onLine) {
    setConnStatus('offline', 'Offline — waiting for network');
    return; // the 'online' event reconnects
  }
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** conn.attempt);
  const delay = Math.round(base * (0.8 + Math.random() * 0.4));
  conn.attempt += 1;
  const secs = Math.max(1, Math.round(delay / 1000));
  setConnStatus('reconnecting', `Reconnecting in ${secs}s…${reason ? ` (${reason})` : ''}`);
  conn.reconnectTimer = setTimeout(() => {
    conn.reconnectTimer = null;
    connect();
  }, delay);
}

export function reconnectNow() {
  if (!state.auth) return;
  conn.attempt = 0;
  clearTimeout(conn.reconnectTimer);
  conn.reconnectTimer = null;
  if (conn.ws) dropSocket();
  connect();
}

// Forget the socket without waiting for a close handshake.
function dropSocket() {
  const ws = conn.ws;
  conn.ws = null;
  stopPing();
  conn.subscribed.clear();
  conn.confirming.clear();
  if (ws) {
    try {
      ws.close();
    } catch (_) {
      /* already closing */
    }
  }
}

export function closeSocket() {
  clearTimeout(conn.reconnectTimer);
  conn.reconnectTimer = null;
  conn.attempt = 0;
  dropSocket();
  setConnStatus('offline');
}

function startPing() {
  stopPing();
  conn.pingTimer = setInterval(() => {
    if (Date.now() - conn.lastFrameAt > STALE_MS) {
      dropSocket(); // silent dead connection
      scheduleReconnect('timed out');
      return;
    }
    sendFrame({ type: 'ping' });
  }, PING_MS);
}

function stopPing() {
  clearInterval(conn.pingTimer);
  conn.pingTimer = null;
}

// Subscribe the open session from the highest seq seen. Live runs are
// rebuilt from the replayed deltas (index 0 onwards).
export function subscribe(conv) {
  if (!isOpen() || !conv.ready || conn.subscribed.has(conv.id)) return;
  for (const [id, run] of conv.runs) {
    if (ACTIVE_RUN.has(run.status) || !run.status || run.status === 'completed') {
      conv.runs.delete(id);
      const node = view.runNodes.get(id);
      if (node) node.remove();
      view.runNodes.delete(id);
    }
  }
  updateCancel();
  clearTimeout(conv.resubTimer);
  conv.resubTimer = null;
  if (sendFrame({ type: 'subscribe', session_id: conv.id, after_seq: conv.lastSeq })) {
    conn.subscribed.add(conv.id);
    conn.confirming.add(conv.id);
    // The server handles a socket's frames in order: sends queued for this
    // session can follow the subscribe right away.
    flushOutbox();
  }
}

// ---------------------------------------------------------------------------
// Socket authentication
// ---------------------------------------------------------------------------
// The socket's token expired: refresh it and hand the new one to the open
// socket in-band (the server closes it with 4001 after a grace period).
export async function renewSocketToken() {
  if (!state.auth) return;
  const outcome = await refreshAuth(state.auth.access_token);
  if (outcome === 'denied') {
    expireSession();
    return;
  }
  if (outcome === 'ok' && isOpen()) {
    conn.ws.send(JSON.stringify({ type: 'auth', access_token: state.auth.access_token }));
    conn.token = state.auth.access_token;
  }
}

// Token rejected on the socket: refresh once, else back to login.
export async function onSocketUnauthenticated() {
  if (!state.auth) return;
  const outcome = await refreshAuth(state.auth.access_token);
  if (outcome === 'ok') reconnectNow();
  else if (outcome === 'denied') expireSession();
}
