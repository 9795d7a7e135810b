// Rendering: sidebar, conversation, messages, live runs, notes, pending sends,
// and the bars that replace the composer (waiting for a person, closed chat).

import { ACTIVE_RUN, CLOSED_STATUSES, KEY_AGENT } from './config.js';
import { el, make } from './dom.js';
import { formatTime, loadJson } from './util.js';
import { currentConv, findSession, state, view } from './state.js';
import { activeRun } from './conversation.js';
import { isOpen } from './connection.js';
import { renderMarkdown } from './markdown.js';
import { isUnread, unreadCount } from './unread.js';

// ---------------------------------------------------------------------------
// Agents: display names, and the picker (unlisted specialists hidden)
// ---------------------------------------------------------------------------
export function agentLabel(name) {
  if (!name) return '';
  if (name === 'human') return 'a person';
  const agent = state.agents.find((a) => a.name === name);
  return (agent && agent.display_name) || name;
}

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
export function sessionTitle(s) {
  return (s && s.title) || 'Untitled chat';
}

export function statusLabel(s) {
  switch (s && s.status) {
    case 'pending_human':
      return s.assignee ? `with ${s.assignee}` : 'waiting for a person';
    case 'resolved':
      return 'resolved';
    case 'ended':
      return 'ended';
    case 'expired':
      return 'expired';
    default:
      return '';
  }
}

export function renderSessions() {
  if (state.mode === 'operator') return; // the console owns the sidebar
  const items = state.sessions.map((s) => {
    const li = make('li', 'session-row');
    const btn = make('button', 'session-item');
    btn.type = 'button';
    btn.dataset.id = s.id;
    if (s.id === state.currentId) {
      btn.classList.add('active');
      btn.setAttribute('aria-current', 'page');
    }
    const unread = isUnread(s);
    btn.classList.toggle('unread', unread);
    const meta = [agentLabel(s.agent), statusLabel(s), formatTime(s.updated_at || s.created_at)].filter(Boolean).join(' · ');
    const title = make('span', 'session-title', sessionTitle(s));
    if (unread) {
      const dot = make('span', 'unread-dot');
      dot.append(make('span', 'sr-only', 'unread'));
      title.prepend(dot);
    }
    btn.append(title, make('span', 'session-meta', meta));
    const more = make('button', 'btn icon row-actions', '⋯');
    more.type = 'button';
    more.dataset.menuFor = s.id;
    more.setAttribute('aria-label', `Actions for ${sessionTitle(s)}`);
    more.setAttribute('aria-haspopup', 'true');
    li.append(btn, more);
    return li;
  });
  el.sessionList.replaceChildren(...items);
  el.sessionsEmpty.hidden = state.sessions.length > 0;
  el.moreSessionsBtn.hidden = !state.nextCursor;
  renderTitle();
}

// ---------------------------------------------------------------------------
// Conversation rendering
// ---------------------------------------------------------------------------
export function clearConversationView() {
  el.storedList.replaceChildren();
  el.pendingList.replaceChildren();
  view.nodes.clear();
  view.runNodes.clear();
  view.noteNodes.clear();
  view.pendingNodes.clear();
  view.dirtyRuns.clear();
  el.presence.hidden = true;
}

export function renderConversation() {
  clearConversationView();
  const conv = currentConv();
  renderHeader();
  if (conv) {
    const msgs = Array.from(conv.messages.values()).sort((a, b) => a.seq - b.seq);
    for (const m of msgs) renderMessage(m);
    for (const note of conv.notes.values()) renderNote(note);
    for (const run of conv.runs.values()) renderRun(run);
    for (const item of state.outbox.values()) renderPending(item);
  }
  renderSessions();
  updateEmpty();
  updateCancel();
  scrollToBottom();
}

export function renderTitle() {
  const conv = currentConv();
  const meta = conv && (conv.meta || findSession(conv.id));
  const base = state.mode === 'operator' ? 'Operator console' : conv ? (meta ? sessionTitle(meta) : 'Loading…') : 'Chat';
  const n = unreadCount();
  document.title = `${n ? `(${n}) ` : ''}${base}${base === 'Chat' ? '' : ' – Chat'}`;
}

export function renderHeader() {
  const conv = currentConv();
  if (!conv) {
    el.chatTitle.textContent = state.mode === 'operator' ? 'Operator console' : 'New chat';
    el.chatSub.textContent = state.mode === 'operator' ? 'Pick a conversation waiting for a person' : '';
  } else {
    const meta = conv.meta || findSession(conv.id);
    el.chatTitle.textContent = meta ? sessionTitle(meta) : 'Loading…';
    const owner = state.mode === 'operator' && meta && meta.owner ? `from ${meta.owner}` : '';
    el.chatSub.textContent = meta ? [owner, agentLabel(meta.agent), statusLabel(meta)].filter(Boolean).join(' · ') : '';
  }
  el.actions.hidden = !conv;
  renderTitle();
  renderBars();
}

// The composer, or what replaces it: a closed chat offers a new one; a chat
// waiting for a person says so; the console asks an operator to take a chat first.
export function renderBars() {
  const conv = currentConv();
  const meta = conv && (conv.meta || findSession(conv.id));
  const status = meta ? meta.status : '';
  const closed = CLOSED_STATUSES.has(status);
  const operator = state.mode === 'operator';
  const holding = operator && meta && status === 'pending_human' && meta.assignee === state.me.username;
  el.closedBar.hidden = !closed;
  if (closed) {
    el.closedText.textContent = {
      ended: 'This chat has ended.',
      resolved: 'This chat was resolved.',
      expired: 'This chat expired.',
    }[status];
  }
  el.closedNewBtn.hidden = operator;
  el.handoffBar.hidden = operator || status !== 'pending_human';
  if (!el.handoffBar.hidden) {
    el.handoffText.textContent = meta.assignee
      ? `You're chatting with ${meta.assignee} from our team.`
      : 'Waiting for a person to join. Your messages will be read when they do.';
  }
  el.claimBar.hidden = !operator || !conv || holding || closed;
  if (!el.claimBar.hidden) {
    const waiting = status === 'pending_human';
    el.claimText.textContent = !waiting
      ? 'This chat is back with the assistant.'
      : meta.assignee
        ? `${meta.assignee} is handling this chat.`
        : 'Nobody has taken this chat yet.';
    el.claimBtn.hidden = !waiting || Boolean(meta.assignee);
  }
  el.composer.hidden = closed || (operator && (!conv || !holding));
}

export function updateEmpty() {
  const conv = currentConv();
  const draft = !conv;
  const hasContent = view.nodes.size + view.runNodes.size + view.pendingNodes.size > 0;
  el.empty.hidden = state.mode === 'operator' || (!draft && (hasContent || !conv.ready));
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
  const who = m.role === 'human' ? m.agent || 'Support agent' : agentLabel(m.agent) || 'Assistant';
  return [who, time].filter(Boolean).join(' · ');
}

// Tool calls as collapsible items (name, arguments, result), updated in
// place: an item the reader opened stays open while the reply streams.
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

export function renderToolCalls(box, calls) {
  for (const call of calls) {
    const key = String(call.call_id || call.name || '');
    let details = Array.from(box.children).find((d) => d.dataset.call === key);
    if (!details) {
      details = make('details', 'tool');
      details.dataset.call = key;
      // Open in the live bubble this stored reply replaces: still open.
      details.open = view.openCalls.delete(key);
      details.append(make('summary'), make('div', 'tool-label', 'Arguments'), make('pre', 'tool-pre'), make('div', 'tool-label', 'Result'), make('pre', 'tool-pre'));
      box.append(details);
    }
    const [summary, , args, resultLabel, result] = details.children;
    setText(summary, `Tool: ${call.name || 'tool'}`);
    const text = typeof call.arguments === 'string' ? call.arguments : JSON.stringify(call.arguments, null, 2);
    setText(args, text == null ? '' : text);
    const done = call.result != null;
    resultLabel.hidden = !done;
    result.hidden = !done;
    setText(result, done ? String(call.result) : '');
  }
}

function toolCallsNode(calls) {
  const box = make('div', 'tools');
  renderToolCalls(box, calls);
  return box;
}

function messageNode(m) {
  const li = make('li', `msg msg-${roleClass(m.role)}`);
  li.dataset.order = String(m.seq);
  li.dataset.seq = String(m.seq);
  if (Array.isArray(m.tool_calls) && m.tool_calls.length) li.append(toolCallsNode(m.tool_calls));
  view.openCalls.clear();
  const bubble = make('div', 'bubble');
  if (m.role === 'assistant' || m.role === 'human') {
    bubble.classList.add('md');
    renderMarkdown(bubble, m.content);
  } else {
    bubble.textContent = m.content == null ? '' : String(m.content);
  }
  li.append(bubble);
  const meta = messageMeta(m);
  if (meta) li.append(make('div', 'meta', meta));
  return li;
}

// Keeps the stored list ordered by `data-order`: messages by seq, a run's
// bubble and notes right after the user message that started it.
function insertOrdered(node) {
  const order = Number(node.dataset.order);
  let before = null;
  for (let n = el.storedList.lastElementChild; n; n = n.previousElementSibling) {
    if (Number(n.dataset.order) <= order) break;
    before = n;
  }
  el.storedList.insertBefore(node, before);
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
  insertOrdered(node);
}

// A note in the transcript: a handoff to another agent or to a person.
export function renderNote(note) {
  if (view.noteNodes.has(note.key)) return;
  const li = make('li', 'note', note.text);
  li.dataset.order = String(note.order);
  li.setAttribute('role', 'note');
  view.noteNodes.set(note.key, li);
  insertOrdered(li);
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
  const who = run.agent ? `${agentLabel(run.agent)} · ` : '';
  const active = ACTIVE_RUN.has(run.status) || !run.status;
  if (active && !isOpen()) return `${who}waiting for the connection…`;
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
      return `${who}stopped`;
    default:
      return `${who}${run.text ? 'typing…' : 'thinking…'}`;
  }
}

export function renderRun(run) {
  let node = view.runNodes.get(run.id);
  if (!node) {
    node = make('li', 'msg msg-assistant live');
    node.dataset.run = run.id;
    node.append(make('div', 'tools'), make('div', 'bubble md'), make('div', 'meta'));
    view.runNodes.set(run.id, node);
  }
  node.dataset.order = String(run.order);
  if (!node.isConnected || Number(node.dataset.placed) !== run.order) {
    node.dataset.placed = String(run.order);
    insertOrdered(node);
  }
  const [tools, bubble, meta] = node.children;
  const active = ACTIVE_RUN.has(run.status) || !run.status;
  if (run.tools.size) renderToolCalls(tools, Array.from(run.tools.values()));
  if (run.text) {
    renderMarkdown(bubble, run.text);
  } else if (active && !bubble.querySelector('.dots')) {
    const dots = make('span', 'dots');
    dots.append(make('i'), make('i'), make('i'));
    bubble.replaceChildren(dots);
  } else if (!active) {
    bubble.replaceChildren(make('span', 'muted', run.status === 'cancelled' ? 'Stopped before any reply.' : 'No reply.'));
  }
  node.classList.toggle('no-text', !run.text);
  node.classList.toggle('run-ended', !active);
  node.classList.toggle('run-failed', run.status === 'failed');
  node.classList.toggle('run-cancelled', run.status === 'cancelled');
  meta.textContent = runStatusText(run);
}

// Re-label live runs (the connection came or went).
export function refreshRunLabels() {
  const conv = currentConv();
  if (!conv) return;
  for (const run of conv.runs.values()) if (view.runNodes.has(run.id)) renderRun(run);
}

export function updateCancel() {
  el.cancelBtn.hidden = !activeRun() || state.mode === 'operator';
}

// ---------------------------------------------------------------------------
// Pending sends: outbox items not yet acknowledged
// ---------------------------------------------------------------------------
export function renderPending(item) {
  const id = item.frame.client_msg_id;
  if (item.frame.session_id !== state.currentId || state.mode === 'operator') return;
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
    const parts = [make('span', '', `Not sent: ${item.error}`)];
    const conv = state.convs.get(item.frame.session_id);
    const closed = conv && conv.meta && CLOSED_STATUSES.has(conv.meta.status);
    if (!item.permanent && !closed) {
      const retry = make('button', 'btn link', 'Retry');
      retry.type = 'button';
      retry.dataset.action = 'retry';
      parts.push(retry);
    }
    const remove = make('button', 'btn link', 'Remove');
    remove.type = 'button';
    remove.dataset.action = 'remove';
    parts.push(remove);
    meta.replaceChildren(...parts);
  } else if (item.timer) {
    meta.replaceChildren(make('span', '', `Waiting to resend (${item.error})…`));
  } else {
    meta.replaceChildren(make('span', '', isOpen() ? 'Sending…' : 'Sending… (waiting for connection)'));
  }
}

export function refreshPendingLabels() {
  for (const item of state.outbox.values()) renderPending(item);
  refreshRunLabels();
}

// ---------------------------------------------------------------------------
// Presence: a person typing
// ---------------------------------------------------------------------------
export function renderPresence(text) {
  el.presence.textContent = text || '';
  el.presence.hidden = !text;
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
