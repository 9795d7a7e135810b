// Authentication: tokens (storage, refresh, expiry), the login form,
// starting and stopping the app for a user, following other tabs.

import { KEY_AUTH, KEY_OUTBOX } from './config.js';
import { el } from './dom.js';
import { loadJson, saveJson } from './util.js';
import { state } from './state.js';
import { ApiError, request } from './api.js';
import { loadAgents, loadSessions, route, startListRefresh } from './sessions.js';
import { forgetSeen } from './unread.js';
import { loadMe, stopQueue } from './operator.js';
import { clearConversationView } from './render.js';
import { restoreOutbox } from './outbox.js';
import { closeSocket, connect, setConnStatus } from './connection.js';

// ---------------------------------------------------------------------------
// Auth tokens: storage, refresh (single flight, shared across tabs), expiry
// ---------------------------------------------------------------------------
function setAuth(auth) {
  state.auth = auth;
  saveJson(KEY_AUTH, auth);
}

// The refresh token is not among them: the gateway keeps it in an HttpOnly
// cookie that only the refresh and logout routes receive (X-Refresh-Cookie).
function tokensFrom(resp, username) {
  const expiresIn = Number(resp.expires_in);
  return {
    access_token: resp.access_token,
    expires_at: expiresIn > 0 ? Date.now() + expiresIn * 1000 : null,
    username,
  };
}

export function tokenExpiringSoon() {
  const at = state.auth && state.auth.expires_at;
  return Boolean(at) && Date.now() > at - 30000;
}

let refreshing = null;
// Resolves 'ok' (new tokens in state.auth), 'denied' (log in again) or 'offline'.
export function refreshAuth(staleToken) {
  const auth = state.auth;
  if (!auth) return Promise.resolve('denied');
  if (staleToken && auth.access_token !== staleToken) return Promise.resolve('ok'); // already refreshed here
  const stored = loadJson(KEY_AUTH, null);
  if (stored && stored.access_token && stored.access_token !== auth.access_token) {
    state.auth = stored; // another tab refreshed first
    return Promise.resolve('ok');
  }
  if (!refreshing) {
    refreshing = (async () => {
      try {
        const resp = await request('POST', '/auth/refresh', storedRefreshToken(auth));
        if (state.auth !== auth) return 'denied'; // logged out meanwhile
        if (!resp || !resp.access_token) return 'denied';
        setAuth(tokensFrom(resp, auth.username));
        return 'ok';
      } catch (e) {
        return e.status === 0 ? 'offline' : 'denied';
      } finally {
        refreshing = null;
      }
    })();
  }
  return refreshing;
}

// The cookie carries the refresh token; a sign-in stored by an older page
// still holds it, spent once here for the cookie.
function storedRefreshToken(auth) {
  return auth.refresh_token ? { refresh_token: auth.refresh_token } : {};
}

// Tokens no longer valid: back to the login form, keep unsent messages.
export function expireSession() {
  if (!state.auth) return;
  const username = state.auth.username;
  teardown();
  saveJson(KEY_AUTH, null);
  showAuth('Your session has expired. Please log in again.', username);
}

export async function logout() {
  const auth = state.auth;
  teardown();
  saveJson(KEY_AUTH, null);
  saveJson(KEY_OUTBOX, null);
  history.replaceState(null, '', location.pathname + location.search);
  showAuth('', '');
  if (auth) {
    request('POST', '/auth/logout', storedRefreshToken(auth), auth.access_token).catch(() => {});
  }
}

// Drop all per-user state, close the socket.
function teardown() {
  state.epoch += 1;
  state.auth = null;
  closeSocket();
  state.agents = [];
  state.sessions = [];
  state.nextCursor = null;
  state.currentId = null;
  state.convs.clear();
  state.outbox.clear();
  state.creating = false;
  state.mode = 'chat';
  state.me = { username: '', operator: false, limits: null };
  stopQueue();
  forgetSeen();
  clearConversationView();
  el.sessionList.replaceChildren();
}

// ---------------------------------------------------------------------------
// Auth view
// ---------------------------------------------------------------------------
// Log in, or sign up: the password field's autocomplete and the password
// rule follow the mode, so password managers offer the right thing.
export function setAuthMode(mode) {
  const signup = mode === 'signup';
  el.authForm.dataset.mode = signup ? 'signup' : 'login';
  el.authTitle.textContent = signup ? 'Create an account' : 'Log in';
  el.authIntro.textContent = signup ? 'Pick a username and a password to start chatting.' : 'Log in to continue your conversations.';
  el.authPass.autocomplete = signup ? 'new-password' : 'current-password';
  el.passwordRule.hidden = !signup;
  el.loginBtn.textContent = signup ? 'Create account' : 'Log in';
  el.switchText.textContent = signup ? 'Have an account?' : 'New here?';
  el.registerBtn.textContent = signup ? 'Log in instead' : 'Create an account';
  el.authError.textContent = '';
}

export function toggleAuthMode() {
  setAuthMode(el.authForm.dataset.mode === 'signup' ? 'login' : 'signup');
  el.authUser.focus();
}

export function showAuth(message, username) {
  el.appView.hidden = true;
  el.authView.hidden = false;
  el.authError.textContent = message || '';
  if (username != null) el.authUser.value = username;
  el.authPass.value = '';
  (el.authUser.value ? el.authPass : el.authUser).focus();
}

function setAuthBusy(busy) {
  el.loginBtn.disabled = busy;
  el.registerBtn.disabled = busy;
}

export async function submitAuth(register) {
  const username = el.authUser.value.trim();
  const password = el.authPass.value;
  if (!username || !password) {
    el.authError.textContent = 'Enter a username and a password.';
    return;
  }
  if (register && [...password].length < 8) {
    el.authError.textContent = 'Use at least 8 characters for the password.';
    return;
  }
  setAuthBusy(true);
  el.authError.textContent = '';
  try {
    if (register) await request('POST', '/auth/register', { username, password });
    const resp = await request('POST', '/auth/login', { username, password });
    if (!resp || !resp.access_token) throw new ApiError(500, 'internal', 'Unexpected login response.');
    setAuth(tokensFrom(resp, username));
    el.authPass.value = '';
    setAuthMode('login');
    startApp();
  } catch (e) {
    el.authError.textContent = e.message;
  } finally {
    setAuthBusy(false);
  }
}

// ---------------------------------------------------------------------------
// App start: show the chat, connect, load agents/sessions, open the route
// ---------------------------------------------------------------------------
export async function startApp() {
  el.authView.hidden = true;
  el.appView.hidden = false;
  el.userName.textContent = state.auth.username || '';
  el.userName.title = state.auth.username || '';
  const epoch = state.epoch;
  setConnStatus('connecting');
  // The limits (for the outbox) and the operator role (for the console route).
  await loadMe();
  if (epoch !== state.epoch || !state.auth) return;
  restoreOutbox();
  connect();
  loadAgents();
  loadSessions(false);
  startListRefresh();
  route();
}

// ---------------------------------------------------------------------------
// Other tabs: follow their token refreshes and log-outs
// ---------------------------------------------------------------------------
export function onStorage(ev) {
  if (ev.key !== KEY_AUTH && ev.key !== null) return;
  const stored = loadJson(KEY_AUTH, null);
  if (!stored || !stored.access_token) {
    if (state.auth) {
      teardown();
      showAuth('You were logged out.', '');
    }
  } else if (state.auth) {
    if (stored.username !== state.auth.username) {
      teardown();
      state.auth = stored;
      startApp();
    } else {
      state.auth = stored;
    }
  } else {
    state.auth = stored;
    startApp();
  }
}
