// Composer: the message box and its send button.

import { el, toast } from './dom.js';
import { state } from './state.js';
import { createSession, navigate } from './sessions.js';
import { queueSend } from './outbox.js';

export async function onSubmit(ev) {
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

export function onInputKeydown(ev) {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    if (typeof el.composer.requestSubmit === 'function') el.composer.requestSubmit();
    else el.composer.dispatchEvent(new Event('submit', { cancelable: true }));
  }
}

export function autosize() {
  el.input.style.height = 'auto';
  el.input.style.height = `${Math.min(el.input.scrollHeight + 2, 200)}px`;
}
