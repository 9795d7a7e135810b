// Unread markers: the highest seq the user has seen per session, kept in
// localStorage, against each session's last_seq.

import { KEY_SEEN } from './config.js';
import { loadJson, saveJson } from './util.js';
import { state } from './state.js';

let seen = null; // {session id: seq}
let hiddenNew = 0; // messages that arrived in the open chat while the tab was hidden

function seqs() {
  if (seen) return seen;
  const stored = loadJson(KEY_SEEN, null);
  seen = stored && state.auth && stored.username === state.auth.username && stored.seqs ? stored.seqs : {};
  return seen;
}

function persist() {
  if (state.auth) saveJson(KEY_SEEN, { username: state.auth.username, seqs: seqs() });
}

export function forgetSeen() {
  seen = null;
  hiddenNew = 0;
}

// Sessions seen for the first time count as read up to where they are.
export function noticeSessions(list) {
  const s = seqs();
  let changed = false;
  for (const session of list) {
    if (s[session.id] == null) {
      s[session.id] = session.last_seq || 0;
      changed = true;
    }
  }
  if (changed) persist();
}

export function markSeen(sessionId, seq) {
  const s = seqs();
  if (!(seq > (s[sessionId] || 0))) return;
  s[sessionId] = seq;
  persist();
}

export function isUnread(session) {
  if (session.id === state.currentId && document.visibilityState === 'visible') return false;
  const s = seqs();
  return s[session.id] != null && (session.last_seq || 0) > s[session.id];
}

// A message arrived in the open chat: seen now, or counted for the tab title.
export function noteArrival(sessionId, seq, fromOthers) {
  if (document.visibilityState === 'visible') {
    markSeen(sessionId, seq);
  } else if (fromOthers) {
    hiddenNew += 1;
  }
}

export function onVisible() {
  hiddenNew = 0;
}

export function unreadCount() {
  return hiddenNew + state.sessions.filter((s) => s.id !== state.currentId && isUnread(s)).length;
}
