// Composer: the message box and its send button. Sizes are checked before
// anything is queued; in the operator console a message goes out as the
// person holding the chat.

import { el, toast } from './dom.js';
import { state } from './state.js';
import { createSession, navigate } from './sessions.js';
import { queueSend, sizeProblem } from './outbox.js';
import { operatorSend, operatorTyping } from './operator.js';

function showProblem(text) {
  el.composerError.textContent = text;
  el.input.setAttribute('aria-invalid', text ? 'true' : 'false');
}

export async function onSubmit(ev) {
  ev.preventDefault();
  const content = el.input.value.replace(/^\s+|\s+$/g, '');
  if (!content || state.creating) return;
  const problem = sizeProblem({ type: 'send', session_id: state.currentId || '00000000-0000-0000-0000-000000000000', client_msg_id: '00000000-0000-0000-0000-000000000000', content });
  if (problem) {
    showProblem(`${problem} Shorten it and try again.`);
    return;
  }
  showProblem('');
  if (state.mode === 'operator') {
    if (await operatorSend(content)) {
      el.input.value = '';
      autosize();
    }
    el.input.focus();
    return;
  }
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
      if (e.status === 409 && /limit/.test(e.message)) {
        showProblem(`${e.message} Use the ⋯ menu of a chat in the list.`);
        document.getElementById('app-view').classList.add('sidebar-open');
      } else if (e.status !== 401) {
        toast(e.message);
      }
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

export function onInput() {
  autosize();
  if (el.composerError.textContent) showProblem('');
  if (state.mode === 'operator') operatorTyping();
}

export function autosize() {
  el.input.style.height = 'auto';
  el.input.style.height = `${Math.min(el.input.scrollHeight + 2, 200)}px`;
}
