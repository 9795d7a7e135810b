// Page state: the signed-in user's data, the socket, the open view.

export const state = {
  epoch: 0, // bumped on log-out so late async results are dropped
  auth: null,
  agents: [],
  sessions: [],
  nextCursor: null,
  currentId: null, // open session id, or null for a new (draft) chat
  convs: new Map(), // session id -> conversation (see newConv)
  outbox: new Map(), // client_msg_id -> {frame, status: 'sending'|'failed', error, tries}
  creating: false,
  mode: 'chat', // or 'operator': the console
  me: { username: '', operator: false, limits: null }, // from GET /me
  queue: [], // operator console: sessions waiting for a person
};

// The single WebSocket connection.
export const conn = {
  ws: null,
  connecting: false,
  attempt: 0,
  openedAt: 0,
  token: null, // access token the socket was opened with
  lastFrameAt: 0,
  reconnectTimer: null,
  pingTimer: null,
  subscribed: new Set(), // session ids subscribed on the current socket
  confirming: new Set(), // of those, the ones whose `subscribed` reply is still due
};

// DOM nodes of the open conversation.
export const view = {
  nodes: new Map(), // seq -> <li>
  runNodes: new Map(), // run_id -> <li>
  noteNodes: new Map(), // note key -> <li>
  pendingNodes: new Map(), // client_msg_id -> <li>
  dirtyRuns: new Set(),
  rafPending: false,
  openCalls: new Set(), // tool calls open in a live bubble its stored reply is replacing
};

function newConv(id) {
  return {
    id,
    meta: null, // session object from the API
    lastSeq: 0, // highest seq seen from history or the subscription stream
    messages: new Map(), // seq -> message
    runs: new Map(), // run_id -> live run
    notes: new Map(), // key -> {key, order, text}: handoffs shown in the transcript
    handoffRuns: new Set(), // runs whose handoff a live frame showed
    runSeq: new Map(), // run_id -> seq of the user message that started it
    finishedRuns: new Set(), // run ids whose stored reply we already have
    ready: false, // history loaded for the current visit
    loading: false,
    retryTimer: null, // reloads the history after a failed attempt
    resubTimer: null, // resubscribes after the server ended the subscription
  };
}

export function getConv(id) {
  let conv = state.convs.get(id);
  if (!conv) {
    conv = newConv(id);
    state.convs.set(id, conv);
  }
  return conv;
}

export const currentConv = () => (state.currentId ? state.convs.get(state.currentId) || null : null);

export function findSession(id) {
  return state.sessions.find((s) => s.id === id) || state.queue.find((s) => s.id === id) || null;
}
