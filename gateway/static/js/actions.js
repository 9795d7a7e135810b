// Session actions, from the header and from each chat in the list: rename,
// resolve, back to the assistant (while waiting for or talking to a person),
// end and delete (the last two confirmed); in the operator console: take,
// hand back, resolve.

import { CLOSED_STATUSES } from './config.js';
import { ask, el, toast } from './dom.js';
import { findSession, getConv, state } from './state.js';
import { api, enc } from './api.js';
import { renderHeader, renderSessions, sessionTitle } from './render.js';
import { navigate } from './sessions.js';
import { operatorAction } from './operator.js';

let menuFor = null; // session id the open menu acts on
let menuAnchor = null;

function metaOf(id) {
  const conv = state.convs.get(id);
  return (conv && conv.meta) || findSession(id);
}

export function openMenu(sessionId, anchor) {
  if (!el.actionMenu.hidden && menuFor === sessionId && menuAnchor === anchor) {
    closeMenu();
    return;
  }
  menuFor = sessionId;
  menuAnchor = anchor;
  const meta = metaOf(sessionId) || {};
  const status = meta.status || 'active';
  const operator = state.mode === 'operator';
  const holding = meta.assignee && meta.assignee === state.me.username;
  const show = {
    rename: !operator,
    resolve: !operator && status === 'active',
    back: !operator && status === 'pending_human',
    end: !operator && status !== 'ended',
    delete: !operator,
    claim: operator && status === 'pending_human' && !meta.assignee,
    'hand-back': operator && status === 'pending_human' && holding,
    'op-resolve': operator && status === 'pending_human' && holding,
  };
  for (const btn of el.actionMenu.querySelectorAll('[data-act]')) btn.hidden = !show[btn.dataset.act];
  const rect = anchor.getBoundingClientRect();
  el.actionMenu.style.top = `${Math.round(rect.bottom + 4)}px`;
  el.actionMenu.style.left = `${Math.round(Math.max(8, Math.min(rect.left, window.innerWidth - 240)))}px`;
  el.actionMenu.hidden = false;
  anchor.setAttribute('aria-expanded', 'true');
  const first = el.actionMenu.querySelector('[data-act]:not([hidden])');
  if (first) first.focus();
}

export function closeMenu() {
  if (el.actionMenu.hidden) return;
  el.actionMenu.hidden = true;
  if (menuAnchor) {
    menuAnchor.setAttribute('aria-expanded', 'false');
    if (document.activeElement && el.actionMenu.contains(document.activeElement)) menuAnchor.focus();
  }
}

export function onHeaderActions() {
  if (state.currentId) openMenu(state.currentId, el.actionsBtn);
}

export function onMenuClick(ev) {
  const btn = ev.target.closest('[data-act]');
  if (!btn) return;
  const id = menuFor;
  closeMenu();
  if (id) act(btn.dataset.act, id);
}

// Arrow keys move within the open menu; Escape closes it.
export function onMenuKeydown(ev) {
  if (ev.key === 'Escape') {
    closeMenu();
    return;
  }
  if (ev.key !== 'ArrowDown' && ev.key !== 'ArrowUp') return;
  ev.preventDefault();
  const items = Array.from(el.actionMenu.querySelectorAll('[data-act]:not([hidden])'));
  const i = items.indexOf(document.activeElement);
  const next = items[(i + (ev.key === 'ArrowDown' ? 1 : items.length - 1)) % items.length];
  if (next) next.focus();
}

function updated(session) {
  const i = state.sessions.findIndex((s) => s.id === session.id);
  if (i >= 0) state.sessions[i] = Object.assign(state.sessions[i], session);
  const conv = state.convs.get(session.id);
  if (conv) conv.meta = Object.assign(conv.meta || {}, session);
  renderSessions();
  if (state.currentId === session.id) renderHeader();
}

async function act(what, id) {
  const meta = metaOf(id) || {};
  const title = sessionTitle(meta);
  try {
    switch (what) {
      case 'rename': {
        const next = await ask({ title: 'Rename chat', input: meta.title || '', ok: 'Rename' });
        if (next == null || !next.trim() || next.trim() === meta.title) return;
        updated(await api('PATCH', `/sessions/${enc(id)}`, { title: next.trim() }));
        break;
      }
      case 'resolve':
        updated(await api('POST', `/sessions/${enc(id)}/resolve`, {}));
        break;
      case 'back':
        await backToAssistant(id);
        break;
      case 'end': {
        const ok = await ask({ title: 'End this chat?', text: `“${title}” will take no more messages.`, ok: 'End chat', danger: true });
        if (!ok) return;
        updated(await api('POST', `/sessions/${enc(id)}/end`));
        break;
      }
      case 'delete': {
        const ok = await ask({ title: 'Delete this chat?', text: `“${title}” and all its messages will be deleted for good.`, ok: 'Delete', danger: true });
        if (!ok) return;
        await api('DELETE', `/sessions/${enc(id)}`);
        state.sessions = state.sessions.filter((s) => s.id !== id);
        const wasOpen = state.currentId === id;
        if (wasOpen) navigate(null);
        state.convs.delete(id);
        renderSessions();
        toast('Chat deleted.', false);
        break;
      }
      default:
        if (state.currentId === id) await operatorAction(what);
    }
  } catch (e) {
    if (e.status !== 401) toast(e.message);
  }
}

// Leaves the person (or the wait for one): the assistant answers again.
async function backToAssistant(id) {
  updated(await api('POST', `/sessions/${enc(id)}/hand-back`, {}));
  toast('You are back with the assistant.', false);
  if (state.currentId === id) el.input.focus();
}

// The "Back to the assistant" button of the open chat's waiting bar.
export async function onHandoffBack() {
  const id = state.currentId;
  if (!id) return;
  el.handoffBackBtn.disabled = true;
  try {
    await backToAssistant(id);
  } catch (e) {
    if (e.status !== 401) toast(e.message);
  } finally {
    el.handoffBackBtn.disabled = false;
  }
}

// Whether the open chat takes messages (not ended, resolved or expired).
export function acceptsMessages(id) {
  const meta = getConv(id).meta;
  return !meta || !CLOSED_STATUSES.has(meta.status);
}
