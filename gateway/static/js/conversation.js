// The open conversation's data: stored messages and live runs.

import { el, toast } from './dom.js';
import { currentConv, state, view } from './state.js';
import { api, enc } from './api.js';
import { renderMessage, renderRun, updateCancel, updateEmpty, withScroll } from './render.js';
import { dropOutbox } from './outbox.js';
import { sendFrame } from './connection.js';

// ---------------------------------------------------------------------------
// Message store: dedupe by seq
// `authoritative` = from history or the subscription stream (advances lastSeq);
// otherwise a provisional copy built from an ack.
// ---------------------------------------------------------------------------
export function addMessage(conv, m, authoritative) {
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

export function applyRunStatus(conv, f) {
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
export function applyDelta(conv, f) {
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

// Cancel button: visible while a run of the open session is active.
export function activeRun() {
  const conv = currentConv();
  if (!conv) return null;
  let queued = null;
  for (const run of conv.runs.values()) {
    if (run.status === 'running' || run.status === 'retrying' || (!run.status && run.text)) return run;
    if (run.status === 'queued' && !queued) queued = run;
  }
  return queued;
}

export async function cancelActiveRun() {
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
