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
  pendingList: $('pending-list'),
  presence: $('presence'),
  handoffBar: $('handoff-bar'),
  handoffText: $('handoff-text'),
  handoffNewBtn: $('handoff-new-btn'),
  handoffBackBtn: $('handoff-back-btn'),
  closedBar: $('closed-bar'),
  closedText: $('closed-text'),
  closedNewBtn: $('closed-new-btn'),
  claimBar: $('claim-bar'),
  claimText: $('claim-text'),
  claimBtn: $('claim-btn'),
  composerError: $('composer-error'),
  actions: $('actions'),
  actionsBtn: $('actions-btn'),
  actionMenu: $('action-menu'),
  consoleLink: $('console-link'),
  chatsLink: $('chats-link'),
  authTitle: $('auth-title'),
  authIntro: $('auth-intro'),
  passwordRule: $('password-rule'),
  switchText: $('switch-text'),
  dialog: $('dialog'),
  dialogTitle: $('dialog-title'),
  dialogText: $('dialog-text'),
  dialogField: $('dialog-field'),
  dialogLabel: $('dialog-label'),
  dialogInput: $('dialog-input'),
  dialogOk: $('dialog-ok'),
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

// A modal question: resolves the entered text (with `input`), true (confirmed) or null (cancelled).
export function ask({ title, text = '', input = null, ok = 'OK', danger = false }) {
  return new Promise((resolve) => {
    const d = el.dialog;
    el.dialogTitle.textContent = title;
    el.dialogText.textContent = text;
    el.dialogText.hidden = !text;
    el.dialogField.hidden = input == null;
    el.dialogInput.value = input == null ? '' : input;
    el.dialogOk.textContent = ok;
    el.dialogOk.classList.toggle('danger', danger);
    d.returnValue = '';
    d.addEventListener('close', () => {
      if (d.returnValue !== 'ok') resolve(null);
      else resolve(input == null ? true : el.dialogInput.value);
    }, { once: true });
    d.showModal();
    (input == null ? el.dialogOk : el.dialogInput).focus();
  });
}
