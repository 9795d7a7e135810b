// Rendering: sidebar, conversation, messages, live runs, pending sends.

import { ACTIVE_RUN, KEY_AGENT } from './config.js';
import { el, make } from './dom.js';
import { formatTime, loadJson } from './util.js';
import { currentConv, findSession, state, view } from './state.js';
import { activeRun } from './conversation.js';
import { isOpen } from './connection.js';

// ---------------------------------------------------------------------------
// Agent picker
// ---------------------------------------------------------------------------
export function renderAgents() {
  const select = el.agentSelect;
  select.replaceChildren();
  // Specialists reached only through a router are not offered.
  const offered = state.agents.filter((a) => a.listed !== false);
  if (!offered.length) {
    select.append(new Option('Default agent', ''));
  }
  for (const agent of offered) {
    const opt = new Option(agent.display_name || agent.name, agent.name);
    if (agent.description) opt.title = agent.description;
    select.append(opt);
  }
  const preferred = loadJson(KEY_AGENT, '');
  if (preferred && offered.some((a) => a.name === preferred)) select.value = preferred;
  renderAgentDescription();
}

export function renderAgentDescription() {
  const agent = state.agents.find((a) => a.name === el.agentSelect.value);
  el.agentDesc.textContent = agent && agent.description ? agent.description : '';
}

// ---------------------------------------------------------------------------
// Session list (sidebar)
// ---------------------------------------------------------------------------
function sessionTitle(s) {
  return (s && s.title) || 'Untitled chat';
}

export function renderSessions() {
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

// ---------------------------------------------------------------------------
// Conversation rendering
// ---------------------------------------------------------------------------
export function clearConversationView() {
  el.storedList.replaceChildren();
  el.runsList.replaceChildren();
  el.pendingList.replaceChildren();
  view.nodes.clear();
  view.runNodes.clear();
  view.pendingNodes.clear();
  view.dirtyRuns.clear();
}

export function renderConversation() {
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

export function renderHeader() {
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

export function updateEmpty() {
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
export function renderMessage(m) {
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
export function withScroll(fn) {
  const box = el.messages;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  fn();
  if (atBottom) box.scrollTop = box.scrollHeight;
}

export function scrollToBottom() {
  el.messages.scrollTop = el.messages.scrollHeight;
}

// ---------------------------------------------------------------------------
// Runs: live assistant bubbles fed by delta frames
// ---------------------------------------------------------------------------
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

export function renderRun(run) {
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

export function updateCancel() {
  el.cancelBtn.hidden = !activeRun();
}

// ---------------------------------------------------------------------------
// Pending sends: outbox items not yet acknowledged
// ---------------------------------------------------------------------------
export function renderPending(item) {
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

export function refreshPendingLabels() {
  for (const item of state.outbox.values()) renderPending(item);
}

// ---------------------------------------------------------------------------
// Sidebar on phone widths
// ---------------------------------------------------------------------------
export function openSidebar() {
  el.appView.classList.add('sidebar-open');
}

export function closeSidebar() {
  el.appView.classList.remove('sidebar-open');
}
