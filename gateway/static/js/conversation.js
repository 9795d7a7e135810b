// The open conversation's data: stored messages and live runs.

import { KEY_STOPPED } from './config.js';
import { el, toast } from './dom.js';
import { loadJson, saveJson } from './util.js';
import { currentConv, state, view } from './state.js';
import { api, enc } from './api.js';
import { agentLabel, renderMessage, renderNote, renderRun, updateCancel, updateEmpty, withScroll } from './render.js';
import { dropOutbox } from './outbox.js';
import { sendFrame } from './connection.js';
import { markSeen, noteArrival } from './unread.js';

// The open chat is read up to its newest message.
export function currentSeen() {
  const conv = currentConv();
  if (conv && conv.lastSeq) markSeen(conv.id, conv.lastSeq);
}

// Where a run's bubble and notes go: right after the user message that
// started it (known from the ack or the run frame), else after the newest
// message seen when it appeared.
function runOrder(conv, runId) {
  const seq = conv.runSeq.get(runId);
  return (seq != null ? seq : conv.lastSeq) + 0.5;
}

// A note in the transcript (a handoff), once per key.
export function addNote(conv, key, order, text) {
  if (conv.notes.has(key)) return;
  const note = { key, order, text };
  conv.notes.set(key, note);
  if (conv.id === state.currentId) withScroll(() => renderNote(note));
}

// The output of stopped replies is kept here so they survive a reload (the
// server stores no partial output).
function saveStopped(conv, run) {
  const all = loadJson(KEY_STOPPED, {});
  all[run.id] = { session_id: run.convId, text: run.text, user_seq: conv.runSeq.get(run.id) };
  const ids = Object.keys(all);
  for (const id of ids.slice(0, Math.max(0, ids.length - 200))) delete all[id];
  saveJson(KEY_STOPPED, all);
}

function stoppedText(runId) {
  const all = loadJson(KEY_STOPPED, {});
  return all[runId] ? String(all[runId].text || '') : '';
}

// After a reload the server replays only runs after the history it sent,
// so the stopped replies of this chat come back from storage, in place.
export function restoreStopped(conv) {
  const all = loadJson(KEY_STOPPED, {});
  for (const [runId, saved] of Object.entries(all)) {
    if (!saved || saved.session_id !== conv.id || !(saved.user_seq > 0) || conv.runs.has(runId)) continue;
    conv.runSeq.set(runId, saved.user_seq);
    applyRunStatus(conv, { run_id: runId, status: 'cancelled', user_seq: saved.user_seq });
  }
}

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
  if (authoritative && !had) notice(conv, msg);
  if (conv.id === state.currentId) {
    withScroll(() => renderMessage(msg));
    updateEmpty();
    if (authoritative) {
      const mine = state.mode === 'operator' ? msg.role === 'human' : msg.role === 'user';
      noteArrival(conv.id, conv.lastSeq, !mine);
    }
  }
}

// A reply by another agent than the one before it shows the handoff (when
// no live handoff frame did already).
function notice(conv, m) {
  if (m.role !== 'assistant' || !m.agent) return;
  const previous = Array.from(conv.messages.values())
    .filter((x) => x.role === 'assistant' && x.seq < m.seq && x.agent)
    .sort((a, b) => b.seq - a.seq)[0];
  if (previous && previous.agent !== m.agent && !(m.run_id && conv.handoffRuns.has(m.run_id))) {
    addNote(conv, `agent:${m.seq}`, m.seq - 0.25, `Handed over to ${agentLabel(m.agent)}`);
  }
}

// ---------------------------------------------------------------------------
// Runs: live assistant bubbles fed by delta frames
// ---------------------------------------------------------------------------
function getRun(conv, runId) {
  let run = conv.runs.get(runId);
  if (!run) {
    run = { id: runId, convId: conv.id, status: '', agent: '', attempt: 0, error: '', text: '', next: 0, buffer: new Map(), fresh: false, order: runOrder(conv, runId), tools: new Map() };
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
    for (const open of node.querySelectorAll('details[open]')) view.openCalls.add(open.dataset.call);
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
  if (Number(f.user_seq) > 0 && conv.runSeq.get(f.run_id) !== Number(f.user_seq)) {
    conv.runSeq.set(f.run_id, Number(f.user_seq));
    run.order = runOrder(conv, f.run_id);
  }
  const was = run.status;
  run.status = f.status || run.status;
  run.agent = f.agent || run.agent;
  run.attempt = attempt;
  run.error = f.error || '';
  if (run.status === 'cancelled' && was !== 'cancelled') {
    // Stopped here: keep its output; replayed after a reload: restore it.
    if (run.text) saveStopped(conv, run);
    else run.text = stoppedText(run.id);
  }
  scheduleRunRender(run);
  updateCancel();
}

// A run called a tool, or got its result: shown on its bubble.
export function applyTool(conv, f) {
  if (conv.finishedRuns.has(f.run_id)) return;
  const run = getRun(conv, f.run_id);
  const call = run.tools.get(f.call_id) || { call_id: f.call_id, name: '', arguments: '', result: null };
  if (f.type === 'tool_call') {
    call.name = f.name;
    call.arguments = f.arguments;
  } else {
    call.result = f.content;
  }
  run.tools.set(f.call_id, call);
  scheduleRunRender(run);
}

// The conversation moved to another agent or to a person.
export function applyHandoff(conv, f) {
  const to = f.to_agent === 'human' ? 'a person' : agentLabel(f.to_agent);
  const reason = f.reason ? ` (${f.reason})` : '';
  addNote(conv, `handoff:${f.run_id}:${f.to_agent}`, runOrder(conv, f.run_id) - 0.25, `Handed over to ${to}${reason}`);
  conv.handoffRuns.add(f.run_id);
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
