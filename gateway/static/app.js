// Chat page: REST for auth/sessions/history, one WebSocket for live events.
// Plain JS, no build step. All user-provided text goes through textContent.
'use strict';

(() => {
  // ---------------------------------------------------------------------------
  // Constants
  // ---------------------------------------------------------------------------
  const API = '/api/v1';
  const KEY_AUTH = 'chat.auth'; // {access_token, refresh_token, expires_at, username}
  const KEY_OUTBOX = 'chat.outbox'; // {username, items: [{frame, status, error}]}
  const KEY_AGENT = 'chat.agent'; // last agent picked for new chats
  const HISTORY_PAGE = 100;
  const SESSIONS_PAGE = 50;
  const PING_MS = 25000;
  const STALE_MS = 65000; // no frame at all for this long: the socket is dead
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const STABLE_MS = 5000; // a connection that lived this long resets the backoff
  const MAX_SEND_RETRIES = 5;
  const ACTIVE_RUN = new Set(['queued', 'running', 'retrying']);
  const RETRYABLE_SEND = new Set(['rate_limited', 'unavailable', 'busy', 'internal']);

  // ---------------------------------------------------------------------------
  // DOM handles
  // ---------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  const el = {
    toast: $('toast'),
    authView: $('auth-view'),
    authForm: $('auth-form'),
    authUser: $('auth-username'),
    authPass: $('auth-password'),
    authError: $('auth-error'),
    loginBtn: $('login-btn'),
    registerBtn: $('register-btn'),
    appView: $('app-view'),
    newChatBtn: $('new-chat-btn'),
    sessionList: $('session-list'),
    sessionsEmpty: $('sessions-empty'),
    moreSessionsBtn: $('more-sessions-btn'),
    userName: $('user-name'),
    logoutBtn: $('logout-btn'),
    scrim: $('scrim'),
    menuBtn: $('menu-btn'),
    chatTitle: $('chat-title'),
    chatSub: $('chat-sub'),
    conn: $('conn'),
    connText: $('conn-text'),
    messages: $('messages'),
    empty: $('empty'),
    emptyTitle: $('empty-title'),
    emptyHint: $('empty-hint'),
    agentPicker: $('agent-picker'),
    agentSelect: $('agent-select'),
    agentDesc: $('agent-desc'),
    storedList: $('stored-list'),
    runsList: $('runs-list'),
    pendingList: $('pending-list'),
    composer: $('composer'),
    input: $('input'),
    cancelBtn: $('cancel-btn'),
    sendBtn: $('send-btn'),
  };

  // ---------------------------------------------------------------------------
  // State
  // ---------------------------------------------------------------------------
  const state = {
    epoch: 0, // bumped on log-out so late async results are dropped
    auth: null,
    agents: [],
    sessions: [],
    nextCursor: null,
    currentId: null, // open session id, or null for a new (draft) chat
    convs: new Map(), // session id -> conversation (see newConv)
    outbox: new Map(), // client_msg_id -> {frame, status: 'sending'|'failed', error, tries}
    creating: false,
  };

  // The single WebSocket connection.
  const conn = {
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
  const view = {
    nodes: new Map(), // seq -> <li>
    runNodes: new Map(), // run_id -> <li>
    pendingNodes: new Map(), // client_msg_id -> <li>
    dirtyRuns: new Set(),
    rafPending: false,
  };

  function newConv(id) {
    return {
      id,
      meta: null, // session object from the API
      lastSeq: 0, // highest seq seen from history or the subscription stream
      messages: new Map(), // seq -> message
      runs: new Map(), // run_id -> live run
      finishedRuns: new Set(), // run ids whose stored reply we already have
      ready: false, // history loaded for the current visit
      loading: false,
      retryTimer: null, // reloads the history after a failed attempt
      resubTimer: null, // resubscribes after the server ended the subscription
    };
  }

  function getConv(id) {
    let conv = state.convs.get(id);
    if (!conv) {
      conv = newConv(id);
      state.convs.set(id, conv);
    }
    return conv;
  }

  const currentConv = () => (state.currentId ? state.convs.get(state.currentId) || null : null);

  // ---------------------------------------------------------------------------
  // Small helpers
  // ---------------------------------------------------------------------------
  function loadJson(key, fallback) {
    try {
      const v = JSON.parse(localStorage.getItem(key));
      return v == null ? fallback : v;
    } catch (_) {
      return fallback;
    }
  }

  function saveJson(key, value) {
    try {
      if (value == null) localStorage.removeItem(key);
      else localStorage.setItem(key, JSON.stringify(value));
    } catch (_) {
      /* storage full or disabled: the page still works for this tab */
    }
  }

  function uuid() {
    if (window.crypto && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
    // randomUUID needs a secure context; fall back to getRandomValues (RFC 4122 v4).
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  // Timestamps may be RFC 3339 strings or epoch numbers (ms, or s if small).
  function toDate(v) {
    if (v == null || v === '') return null;
    if (typeof v === 'number' || /^\d+$/.test(String(v))) {
      const n = Number(v);
      return new Date(n < 1e12 ? n * 1000 : n);
    }
    const d = new Date(v);
    return Number.isNaN(d.getTime()) ? null : d;
  }

  function formatTime(v) {
    const d = toDate(v);
    if (!d) return '';
    const now = new Date();
    const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    if (d.toDateString() === now.toDateString()) return time;
    const sameYear = d.getFullYear() === now.getFullYear();
    const date = d.toLocaleDateString([], sameYear ? { month: 'short', day: 'numeric' } : { year: 'numeric', month: 'short', day: 'numeric' });
    return `${date} ${time}`;
  }

  let toastTimer = null;
  function toast(message, isError = true) {
    el.toast.textContent = message;
    el.toast.classList.toggle('error', isError);
    el.toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      el.toast.hidden = true;
    }, 5000);
  }

  // ---------------------------------------------------------------------------
  // REST client: JSON in/out, errors as ApiError, one refresh attempt on 401
  // ---------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function request(method, path, body, token) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    let res;
    try {
      res = await fetch(API + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
      });
    } catch (_) {
      throw new ApiError(0, 'network', 'Cannot reach the server. Check your connection.');
    }
    const text = res.status === 204 ? '' : await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (!res.ok) {
      const err = data && data.error ? data.error : {};
      let message = err.message || `Request failed (${res.status})`;
      if (res.status === 429 && !err.message) {
        const after = res.headers.get('Retry-After');
        message = `Too many requests${after ? `, try again in ${after}s` : ''}.`;
      }
      throw new ApiError(res.status, err.code || `http_${res.status}`, message);
    }
    return data;
  }

  // Authenticated call. On 401: refresh once and retry, else back to login.
  async function api(method, path, body) {
    if (!state.auth) throw new ApiError(401, 'unauthenticated', 'Not logged in.');
    const token = state.auth.access_token;
    try {
      return await request(method, path, body, token);
    } catch (e) {
      if (e.status !== 401) throw e;
    }
    const outcome = await refreshAuth(token);
    if (outcome === 'offline') throw new ApiError(0, 'network', 'Cannot reach the server. Check your connection.');
    if (outcome !== 'ok') {
      expireSession();
      throw new ApiError(401, 'unauthenticated', 'Your session has expired.');
    }
    try {
      return await request(method, path, body, state.auth.access_token);
    } catch (e) {
      if (e.status === 401) expireSession();
      throw e;
    }
  }

  const enc = encodeURIComponent;

  // ---------------------------------------------------------------------------
  // Auth tokens: storage, refresh (single flight, shared across tabs), expiry
  // ---------------------------------------------------------------------------
  function setAuth(auth) {
    state.auth = auth;
    saveJson(KEY_AUTH, auth);
  }

  function tokensFrom(resp, username) {
    const expiresIn = Number(resp.expires_in);
    return {
      access_token: resp.access_token,
      refresh_token: resp.refresh_token || null,
      expires_at: expiresIn > 0 ? Date.now() + expiresIn * 1000 : null,
      username,
    };
  }

  function tokenExpiringSoon() {
    const at = state.auth && state.auth.expires_at;
    return Boolean(at) && Date.now() > at - 30000;
  }

  let refreshing = null;
  // Resolves 'ok' (new tokens in state.auth), 'denied' (log in again) or 'offline'.
  function refreshAuth(staleToken) {
    const auth = state.auth;
    if (!auth) return Promise.resolve('denied');
    if (staleToken && auth.access_token !== staleToken) return Promise.resolve('ok'); // already refreshed here
    const stored = loadJson(KEY_AUTH, null);
    if (stored && stored.access_token && stored.access_token !== auth.access_token) {
      state.auth = stored; // another tab refreshed first
      return Promise.resolve('ok');
    }
    if (!auth.refresh_token) return Promise.resolve('denied');
    if (!refreshing) {
      refreshing = (async () => {
        try {
          const resp = await request('POST', '/auth/refresh', { refresh_token: auth.refresh_token });
          if (state.auth !== auth) return 'denied'; // logged out meanwhile
          if (!resp || !resp.access_token) return 'denied';
          const next = tokensFrom(resp, auth.username);
          if (!next.refresh_token) next.refresh_token = auth.refresh_token;
          setAuth(next);
          return 'ok';
        } catch (e) {
          return e.status === 0 ? 'offline' : 'denied';
        } finally {
          refreshing = null;
        }
      })();
    }
    return refreshing;
  }

  // Tokens no longer valid: back to the login form, keep unsent messages.
  function expireSession() {
    if (!state.auth) return;
    const username = state.auth.username;
    teardown();
    saveJson(KEY_AUTH, null);
    showAuth('Your session has expired. Please log in again.', username);
  }

  async function logout() {
    const auth = state.auth;
    teardown();
    saveJson(KEY_AUTH, null);
    saveJson(KEY_OUTBOX, null);
    history.replaceState(null, '', location.pathname + location.search);
    showAuth('', '');
    if (auth && auth.refresh_token) {
      request('POST', '/auth/logout', { refresh_token: auth.refresh_token }, auth.access_token).catch(() => {});
    }
  }

  // Drop all per-user state, close the socket.
  function teardown() {
    state.epoch += 1;
    state.auth = null;
    closeSocket();
    state.agents = [];
    state.sessions = [];
    state.nextCursor = null;
    state.currentId = null;
    state.convs.clear();
    state.outbox.clear();
    state.creating = false;
    clearConversationView();
    el.sessionList.replaceChildren();
  }

  // ---------------------------------------------------------------------------
  // Auth view
  // ---------------------------------------------------------------------------
  function showAuth(message, username) {
    el.appView.hidden = true;
    el.authView.hidden = false;
    el.authError.textContent = message || '';
    if (username != null) el.authUser.value = username;
    el.authPass.value = '';
    (el.authUser.value ? el.authPass : el.authUser).focus();
  }

  function setAuthBusy(busy) {
    el.loginBtn.disabled = busy;
    el.registerBtn.disabled = busy;
  }

  async function submitAuth(register) {
    const username = el.authUser.value.trim();
    const password = el.authPass.value;
    if (!username || !password) {
      el.authError.textContent = 'Enter a username and a password.';
      return;
    }
    setAuthBusy(true);
    el.authError.textContent = '';
    try {
      if (register) await request('POST', '/auth/register', { username, password });
      const resp = await request('POST', '/auth/login', { username, password });
      if (!resp || !resp.access_token) throw new ApiError(500, 'internal', 'Unexpected login response.');
      setAuth(tokensFrom(resp, username));
      el.authPass.value = '';
      startApp();
    } catch (e) {
      el.authError.textContent = e.message;
    } finally {
      setAuthBusy(false);
    }
  }

  // ---------------------------------------------------------------------------
  // App start: show the chat, connect, load agents/sessions, open the route
  // ---------------------------------------------------------------------------
  function startApp() {
    el.authView.hidden = true;
    el.appView.hidden = false;
    el.userName.textContent = state.auth.username || '';
    el.userName.title = state.auth.username || '';
    restoreOutbox();
    setConnStatus('connecting');
    connect();
    loadAgents();
    loadSessions(false);
    route();
  }

  // ---------------------------------------------------------------------------
  // Agents
  // ---------------------------------------------------------------------------
  async function loadAgents() {
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

  function renderAgents() {
    const select = el.agentSelect;
    select.replaceChildren();
    if (!state.agents.length) {
      select.append(new Option('Default agent', ''));
    }
    for (const agent of state.agents) {
      const opt = new Option(agent.name, agent.name);
      if (agent.description) opt.title = agent.description;
      select.append(opt);
    }
    const preferred = loadJson(KEY_AGENT, '');
    if (preferred && state.agents.some((a) => a.name === preferred)) select.value = preferred;
    renderAgentDescription();
  }

  function renderAgentDescription() {
    const agent = state.agents.find((a) => a.name === el.agentSelect.value);
    el.agentDesc.textContent = agent && agent.description ? agent.description : '';
  }

  // ---------------------------------------------------------------------------
  // Session list (sidebar)
  // ---------------------------------------------------------------------------
  async function loadSessions(more) {
    const epoch = state.epoch;
    const q = new URLSearchParams({ limit: String(SESSIONS_PAGE) });
    if (more && state.nextCursor) q.set('cursor', state.nextCursor);
    try {
      const data = await api('GET', `/sessions?${q}`);
      if (epoch !== state.epoch) return;
      const list = (data && data.sessions) || [];
      state.sessions = more ? mergeSessions(state.sessions, list) : mergeSessions(localOnlySessions(list), list);
      state.nextCursor = (data && data.next_cursor) || null;
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

  function findSession(id) {
    return state.sessions.find((s) => s.id === id) || null;
  }

  // Move a session to the top after activity.
  function bumpSession(id) {
    const i = state.sessions.findIndex((s) => s.id === id);
    if (i < 0) return;
    const [s] = state.sessions.splice(i, 1);
    s.updated_at = new Date().toISOString();
    state.sessions.unshift(s);
    renderSessions();
  }

  function sessionTitle(s) {
    return (s && s.title) || 'Untitled chat';
  }

  function renderSessions() {
    const items = state.sessions.map((s) => {
      const li = make('li');
      const btn = make('button', 'session-item');
      btn.type = 'button';
      btn.dataset.id = s.id;
      if (s.id === state.currentId) {
        btn.classList.add('active');
        btn.setAttribute('aria-current', 'page');
      }
      const meta = [s.agent, s.status && s.status !== 'open' && s.status !== 'active' ? s.status : '', formatTime(s.updated_at || s.created_at)]
        .filter(Boolean)
        .join(' · ');
      btn.append(make('span', 'session-title', sessionTitle(s)), make('span', 'session-meta', meta));
      li.append(btn);
      return li;
    });
    el.sessionList.replaceChildren(...items);
    el.sessionsEmpty.hidden = state.sessions.length > 0;
    el.moreSessionsBtn.hidden = !state.nextCursor;
  }

  function onSessionListClick(ev) {
    const btn = ev.target.closest('.session-item');
    if (btn) navigate(btn.dataset.id);
  }

  // ---------------------------------------------------------------------------
  // Routing: #/s/<session id> opens a session, no hash is a new chat
  // ---------------------------------------------------------------------------
  function sessionIdFromHash() {
    const m = /^#\/s\/(.+)$/.exec(location.hash);
    if (!m) return null;
    try {
      return decodeURIComponent(m[1]);
    } catch (_) {
      return null;
    }
  }

  function navigate(id) {
    const target = id ? `#/s/${enc(id)}` : location.pathname + location.search;
    if ((id ? `#/s/${enc(id)}` : '') !== location.hash) history.pushState(null, '', target);
    route();
  }

  function route() {
    if (!state.auth) return;
    const id = sessionIdFromHash();
    if (id) openSession(id);
    else showDraft();
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
  async function loadConversation(conv) {
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
      conv.ready = true;
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
  async function createSession(firstText) {
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

  // ---------------------------------------------------------------------------
  // Conversation rendering
  // ---------------------------------------------------------------------------
  function clearConversationView() {
    el.storedList.replaceChildren();
    el.runsList.replaceChildren();
    el.pendingList.replaceChildren();
    view.nodes.clear();
    view.runNodes.clear();
    view.pendingNodes.clear();
    view.dirtyRuns.clear();
  }

  function renderConversation() {
    clearConversationView();
    const conv = currentConv();
    renderHeader();
    if (conv) {
      const msgs = Array.from(conv.messages.values()).sort((a, b) => a.seq - b.seq);
      for (const m of msgs) renderMessage(m);
      for (const run of conv.runs.values()) renderRun(run);
      for (const item of state.outbox.values()) renderPending(item);
    }
    renderSessions();
    updateEmpty();
    updateCancel();
    scrollToBottom();
  }

  function renderHeader() {
    const conv = currentConv();
    if (!conv) {
      el.chatTitle.textContent = 'New chat';
      el.chatSub.textContent = '';
      document.title = 'Chat';
      return;
    }
    const meta = conv.meta || findSession(conv.id);
    const title = meta ? sessionTitle(meta) : 'Loading…';
    el.chatTitle.textContent = title;
    el.chatSub.textContent = meta ? [meta.agent, meta.status].filter(Boolean).join(' · ') : '';
    document.title = `${title} – Chat`;
  }

  function updateEmpty() {
    const conv = currentConv();
    const draft = !conv;
    const hasContent = view.nodes.size + view.runNodes.size + view.pendingNodes.size > 0;
    el.empty.hidden = !draft && (hasContent || !conv.ready);
    el.agentPicker.hidden = !draft;
    el.emptyTitle.textContent = draft ? 'Start a conversation' : 'No messages yet';
    el.emptyHint.textContent = draft ? 'Pick an agent and type a message below to begin.' : 'Say hello below.';
  }

  function roleClass(role) {
    return ['user', 'assistant', 'human', 'system'].includes(role) ? role : 'assistant';
  }

  function messageMeta(m) {
    const time = formatTime(m.created_at);
    if (m.role === 'user') return time;
    if (m.role === 'system') return '';
    const who = m.role === 'human' ? m.agent || 'Support agent' : m.agent || 'Assistant';
    return [who, time].filter(Boolean).join(' · ');
  }

  function messageNode(m) {
    const li = make('li', `msg msg-${roleClass(m.role)}`);
    li.dataset.seq = String(m.seq);
    li.append(make('div', 'bubble', m.content == null ? '' : String(m.content)));
    const meta = messageMeta(m);
    if (meta) li.append(make('div', 'meta', meta));
    return li;
  }

  // Insert (or replace) a stored message node, keeping seq order.
  function renderMessage(m) {
    const node = messageNode(m);
    const old = view.nodes.get(m.seq);
    view.nodes.set(m.seq, node);
    if (old) {
      old.replaceWith(node);
      return;
    }
    let before = null;
    for (let n = el.storedList.lastElementChild; n; n = n.previousElementSibling) {
      if (Number(n.dataset.seq) < m.seq) break;
      before = n;
    }
    el.storedList.insertBefore(node, before);
  }

  // Keep the view pinned to the bottom when the user was already there.
  function withScroll(fn) {
    const box = el.messages;
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    fn();
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  function scrollToBottom() {
    el.messages.scrollTop = el.messages.scrollHeight;
  }

  // ---------------------------------------------------------------------------
  // Message store: dedupe by seq
  // `authoritative` = from history or the subscription stream (advances lastSeq);
  // otherwise a provisional copy built from an ack.
  // ---------------------------------------------------------------------------
  function addMessage(conv, m, authoritative) {
    if (!m || typeof m.seq !== 'number') return;
    if (authoritative && m.seq > conv.lastSeq) conv.lastSeq = m.seq;
    // A reply always closes its run's live bubble, even when its seq is known.
    if (authoritative && m.run_id && m.role !== 'user') finishRun(conv, m.run_id);
    const had = conv.messages.get(m.seq);
    if (had && (!had.provisional || !authoritative)) return;
    const msg = Object.assign({}, m, { provisional: !authoritative });
    conv.messages.set(m.seq, msg);
    if (msg.client_msg_id) dropOutbox(msg.client_msg_id);
    if (conv.id === state.currentId) {
      withScroll(() => renderMessage(msg));
      updateEmpty();
    }
  }

  // ---------------------------------------------------------------------------
  // Runs: live assistant bubbles fed by delta frames
  // ---------------------------------------------------------------------------
  function getRun(conv, runId) {
    let run = conv.runs.get(runId);
    if (!run) {
      run = { id: runId, convId: conv.id, status: '', agent: '', attempt: 0, error: '', text: '', next: 0, buffer: new Map(), fresh: false };
      conv.runs.set(runId, run);
    }
    return run;
  }

  // The stored reply arrived: the live bubble is replaced by the message.
  function finishRun(conv, runId) {
    conv.finishedRuns.add(runId);
    conv.runs.delete(runId);
    const node = view.runNodes.get(runId);
    if (node && conv.id === state.currentId) {
      node.remove();
      view.runNodes.delete(runId);
      view.dirtyRuns.delete(runId);
      updateCancel();
    }
  }

  function applyRunStatus(conv, f) {
    if (conv.finishedRuns.has(f.run_id)) return;
    const run = getRun(conv, f.run_id);
    const attempt = Number(f.attempt) || run.attempt;
    // A new attempt starts over: drop the partial output of the failed one.
    if ((f.status === 'retrying' || attempt > run.attempt) && (run.text || run.buffer.size || run.next)) {
      run.text = '';
      run.buffer.clear();
      run.next = 0;
      run.fresh = true;
    }
    run.status = f.status || run.status;
    run.agent = f.agent || run.agent;
    run.attempt = attempt;
    run.error = f.error || '';
    scheduleRunRender(run);
    updateCancel();
  }

  // Apply deltas strictly in index order; ignore indexes already applied.
  function applyDelta(conv, f) {
    if (conv.finishedRuns.has(f.run_id)) return;
    const run = getRun(conv, f.run_id);
    if (run.status === 'failed' || run.status === 'cancelled') return;
    const index = Number(f.index);
    if (!Number.isInteger(index)) return;
    if (run.fresh) {
      // first delta of a retried attempt: accept its numbering as the start
      run.fresh = false;
      run.next = index;
    }
    if (index < run.next || run.buffer.has(index)) return;
    run.buffer.set(index, f.text == null ? '' : String(f.text));
    while (run.buffer.has(run.next)) {
      run.text += run.buffer.get(run.next);
      run.buffer.delete(run.next);
      run.next += 1;
    }
    if (!run.status || run.status === 'queued') run.status = 'running';
    scheduleRunRender(run);
    updateCancel();
  }

  // Batch bubble updates to one per animation frame.
  function scheduleRunRender(run) {
    if (run.convId !== state.currentId) return;
    view.dirtyRuns.add(run.id);
    if (view.rafPending) return;
    view.rafPending = true;
    requestAnimationFrame(() => {
      view.rafPending = false;
      const conv = currentConv();
      if (!conv) return;
      const ids = Array.from(view.dirtyRuns);
      view.dirtyRuns.clear();
      withScroll(() => {
        for (const id of ids) {
          const run = conv.runs.get(id);
          if (run) renderRun(run);
        }
      });
      updateEmpty();
    });
  }

  function runStatusText(run) {
    const who = run.agent ? `${run.agent} · ` : '';
    switch (run.status) {
      case 'queued':
        return `${who}queued`;
      case 'retrying':
        return `${who}retrying${run.attempt ? ` (attempt ${run.attempt})` : ''}…`;
      case 'completed':
        return `${who}done`;
      case 'failed':
        return `${who}failed${run.error ? `: ${run.error}` : ''}`;
      case 'cancelled':
        return `${who}cancelled`;
      default:
        return `${who}${run.text ? 'typing…' : 'thinking…'}`;
    }
  }

  function renderRun(run) {
    let node = view.runNodes.get(run.id);
    if (!node) {
      node = make('li', 'msg msg-assistant live');
      node.append(make('div', 'bubble'), make('div', 'meta'));
      view.runNodes.set(run.id, node);
      el.runsList.append(node);
    }
    const [bubble, meta] = node.children;
    const active = ACTIVE_RUN.has(run.status) || !run.status;
    if (run.text) {
      bubble.textContent = run.text;
    } else if (!bubble.querySelector('.dots')) {
      const dots = make('span', 'dots');
      dots.append(make('i'), make('i'), make('i'));
      bubble.replaceChildren(dots);
    }
    node.classList.toggle('no-text', !run.text);
    node.classList.toggle('run-ended', !active);
    node.classList.toggle('run-failed', run.status === 'failed');
    node.classList.toggle('run-cancelled', run.status === 'cancelled');
    meta.textContent = runStatusText(run);
  }

  // Cancel button: visible while a run of the open session is active.
  function activeRun() {
    const conv = currentConv();
    if (!conv) return null;
    let queued = null;
    for (const run of conv.runs.values()) {
      if (run.status === 'running' || run.status === 'retrying' || (!run.status && run.text)) return run;
      if (run.status === 'queued' && !queued) queued = run;
    }
    return queued;
  }

  function updateCancel() {
    el.cancelBtn.hidden = !activeRun();
  }

  async function cancelActiveRun() {
    const run = activeRun();
    if (!run) return;
    el.cancelBtn.disabled = true;
    try {
      if (!sendFrame({ type: 'cancel', session_id: run.convId, run_id: run.id })) {
        await api('POST', `/sessions/${enc(run.convId)}/runs/${enc(run.id)}/cancel`);
      }
    } catch (e) {
      if (e.status !== 401) toast(e.message);
    } finally {
      el.cancelBtn.disabled = false;
    }
  }

  // ---------------------------------------------------------------------------
  // Outbox: messages sent but not yet acknowledged (persisted across reloads)
  // ---------------------------------------------------------------------------
  function persistOutbox() {
    if (!state.auth) return;
    const items = Array.from(state.outbox.values()).map((i) => ({ frame: i.frame, status: i.status, error: i.error }));
    saveJson(KEY_OUTBOX, items.length ? { username: state.auth.username, items } : null);
  }

  function restoreOutbox() {
    state.outbox.clear();
    const saved = loadJson(KEY_OUTBOX, null);
    if (!saved || !Array.isArray(saved.items) || saved.username !== state.auth.username) {
      saveJson(KEY_OUTBOX, null);
      return;
    }
    for (const i of saved.items) {
      if (!i || !i.frame || !i.frame.client_msg_id) continue;
      state.outbox.set(i.frame.client_msg_id, { frame: i.frame, status: i.status === 'failed' ? 'failed' : 'sending', error: i.error || '', tries: 0, timer: null, sentOn: null });
    }
  }

  function queueSend(sessionId, content) {
    const frame = { type: 'send', session_id: sessionId, client_msg_id: uuid(), content };
    const item = { frame, status: 'sending', error: '', tries: 0, timer: null, sentOn: null };
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
  function flushOutbox() {
    for (const item of state.outbox.values()) {
      if (item.status === 'sending' && !item.timer && readyToSend(item.frame.session_id)) sendItem(item);
    }
  }

  function dropOutbox(clientMsgId) {
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
    if (!item) return;
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
  function onSendError(item, f) {
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
    } else {
      item.status = 'failed';
      item.error = f.message || f.code || 'Message not sent.';
      persistOutbox();
    }
    renderPending(item);
  }

  function renderPending(item) {
    const id = item.frame.client_msg_id;
    if (item.frame.session_id !== state.currentId) return;
    let node = view.pendingNodes.get(id);
    if (!node) {
      node = make('li', 'msg msg-user pending');
      node.dataset.cid = id;
      node.append(make('div', 'bubble', item.frame.content), make('div', 'meta'));
      view.pendingNodes.set(id, node);
      el.pendingList.append(node);
    }
    const meta = node.children[1];
    const failed = item.status === 'failed';
    node.classList.toggle('send-failed', failed);
    if (failed) {
      const retry = make('button', 'btn link', 'Retry');
      retry.type = 'button';
      retry.dataset.action = 'retry';
      const remove = make('button', 'btn link', 'Remove');
      remove.type = 'button';
      remove.dataset.action = 'remove';
      meta.replaceChildren(make('span', '', `Not sent: ${item.error}`), retry, remove);
    } else if (item.timer) {
      meta.replaceChildren(make('span', '', `Waiting to resend (${item.error})…`));
    } else {
      meta.replaceChildren(make('span', '', isOpen() ? 'Sending…' : 'Sending… (waiting for connection)'));
    }
  }

  function refreshPendingLabels() {
    for (const item of state.outbox.values()) renderPending(item);
  }

  function onPendingClick(ev) {
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

  // ---------------------------------------------------------------------------
  // WebSocket: connect, reconnect with backoff, ping, subscribe
  // ---------------------------------------------------------------------------
  function isOpen() {
    return Boolean(conn.ws) && conn.ws.readyState === WebSocket.OPEN;
  }

  function sendFrame(frame) {
    if (!isOpen()) return false;
    try {
      conn.ws.send(JSON.stringify(frame));
      return true;
    } catch (_) {
      return false;
    }
  }

  function setConnStatus(status, detail) {
    el.conn.dataset.state = status;
    const text = {
      connected: 'Connected',
      connecting: 'Connecting…',
      reconnecting: 'Reconnecting…',
      offline: 'Offline',
    }[status];
    el.connText.textContent = detail || text;
    el.conn.title = detail || text;
  }

  async function connect() {
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
      const url = `${proto}//${location.host}${API}/ws?access_token=${enc(state.auth.access_token)}`;
      const ws = new WebSocket(url);
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
    // A refused upgrade (e.g. an expired token) is invisible to the browser:
    // probe the REST API, which refreshes the token (then reconnect at once)
    // or goes back to the login form.
    if (!conn.openedAt || ev.code === 1008 || ev.code === 4001) probeAuth();
    refreshPendingLabels();
    scheduleReconnect(ev.reason);
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

  function reconnectNow() {
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

  function closeSocket() {
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
  function subscribe(conv) {
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
  // Server frames
  // ---------------------------------------------------------------------------
  function handleFrame(f) {
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

  // The socket's token expired: refresh it and hand the new one to the open
  // socket in-band (the server closes it with 4001 after a grace period).
  async function renewSocketToken() {
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
  async function onSocketUnauthenticated() {
    if (!state.auth) return;
    const outcome = await refreshAuth(state.auth.access_token);
    if (outcome === 'ok') reconnectNow();
    else if (outcome === 'denied') expireSession();
  }

  // ---------------------------------------------------------------------------
  // Composer
  // ---------------------------------------------------------------------------
  async function onSubmit(ev) {
    ev.preventDefault();
    const content = el.input.value.replace(/^\s+|\s+$/g, '');
    if (!content || state.creating) return;
    let sessionId = state.currentId;
    if (!sessionId) {
      state.creating = true;
      el.sendBtn.disabled = true;
      const epoch = state.epoch;
      try {
        const session = await createSession(content);
        if (epoch !== state.epoch) return;
        sessionId = session.id;
        navigate(sessionId);
      } catch (e) {
        if (e.status !== 401) toast(e.message);
        return;
      } finally {
        state.creating = false;
        el.sendBtn.disabled = false;
      }
    }
    el.input.value = '';
    autosize();
    queueSend(sessionId, content);
    el.input.focus();
  }

  function onInputKeydown(ev) {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      if (typeof el.composer.requestSubmit === 'function') el.composer.requestSubmit();
      else el.composer.dispatchEvent(new Event('submit', { cancelable: true }));
    }
  }

  function autosize() {
    el.input.style.height = 'auto';
    el.input.style.height = `${Math.min(el.input.scrollHeight + 2, 200)}px`;
  }

  // ---------------------------------------------------------------------------
  // Sidebar on phone widths
  // ---------------------------------------------------------------------------
  function openSidebar() {
    el.appView.classList.add('sidebar-open');
  }

  function closeSidebar() {
    el.appView.classList.remove('sidebar-open');
  }

  // ---------------------------------------------------------------------------
  // Other tabs: follow their token refreshes and log-outs
  // ---------------------------------------------------------------------------
  function onStorage(ev) {
    if (ev.key !== KEY_AUTH && ev.key !== null) return;
    const stored = loadJson(KEY_AUTH, null);
    if (!stored || !stored.access_token) {
      if (state.auth) {
        teardown();
        showAuth('You were logged out.', '');
      }
    } else if (state.auth) {
      if (stored.username !== state.auth.username) {
        teardown();
        state.auth = stored;
        startApp();
      } else {
        state.auth = stored;
      }
    } else {
      state.auth = stored;
      startApp();
    }
  }

  // ---------------------------------------------------------------------------
  // Wiring
  // ---------------------------------------------------------------------------
  function bindEvents() {
    el.authForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      submitAuth(false);
    });
    el.registerBtn.addEventListener('click', () => submitAuth(true));
    el.logoutBtn.addEventListener('click', logout);
    el.newChatBtn.addEventListener('click', () => {
      navigate(null);
      el.input.focus();
    });
    el.sessionList.addEventListener('click', onSessionListClick);
    el.moreSessionsBtn.addEventListener('click', () => loadSessions(true));
    el.agentSelect.addEventListener('change', () => {
      saveJson(KEY_AGENT, el.agentSelect.value);
      renderAgentDescription();
    });
    el.composer.addEventListener('submit', onSubmit);
    el.input.addEventListener('keydown', onInputKeydown);
    el.input.addEventListener('input', autosize);
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
      if (document.visibilityState === 'visible' && state.auth && !conn.ws && !conn.connecting) reconnectNow();
    });
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape') closeSidebar();
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
})();
