// REST client: JSON in/out, errors as ApiError, one refresh attempt on 401.

import { API } from './config.js';
import { state } from './state.js';
import { expireSession, refreshAuth } from './auth.js';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function request(method, path, body, token) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  if (path.startsWith('/auth/')) headers['X-Refresh-Cookie'] = '1'; // refresh token in an HttpOnly cookie
  let res;
  try {
    res = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (_) {
    throw new ApiError(0, 'network', 'Cannot reach the server. Check your connection.');
  }
  const text = res.status === 204 ? '' : await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (_) {
      data = null;
    }
  }
  if (!res.ok) {
    const err = data && data.error ? data.error : {};
    let message = err.message || `Request failed (${res.status})`;
    if (res.status === 429 && !err.message) {
      const after = res.headers.get('Retry-After');
      message = `Too many requests${after ? `, try again in ${after}s` : ''}.`;
    }
    throw new ApiError(res.status, err.code || `http_${res.status}`, message);
  }
  return data;
}

// Authenticated call. On 401: refresh once and retry, else back to login.
export async function api(method, path, body) {
  if (!state.auth) throw new ApiError(401, 'unauthenticated', 'Not logged in.');
  const token = state.auth.access_token;
  try {
    return await request(method, path, body, token);
  } catch (e) {
    if (e.status !== 401) throw e;
  }
  const outcome = await refreshAuth(token);
  if (outcome === 'offline') throw new ApiError(0, 'network', 'Cannot reach the server. Check your connection.');
  if (outcome !== 'ok') {
    expireSession();
    throw new ApiError(401, 'unauthenticated', 'Your session has expired.');
  }
  try {
    return await request(method, path, body, state.auth.access_token);
  } catch (e) {
    if (e.status === 401) expireSession();
    throw e;
  }
}

export const enc = encodeURIComponent;
