// DOM handles and small DOM helpers.

const $ = (id) => document.getElementById(id);

export const el = {
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

export function make(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

let toastTimer = null;
export function toast(message, isError = true) {
  el.toast.textContent = message;
  el.toast.classList.toggle('error', isError);
  el.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    el.toast.hidden = true;
  }, 5000);
}
