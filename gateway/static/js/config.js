// Constants shared by the page's modules.

export const API = '/api/v1';
export const KEY_AUTH = 'chat.auth'; // {access_token, refresh_token, expires_at, username}
export const KEY_OUTBOX = 'chat.outbox'; // {username, items: [{frame, status, error}]}
export const KEY_AGENT = 'chat.agent'; // last agent picked for new chats
export const HISTORY_PAGE = 100;
export const SESSIONS_PAGE = 50;
export const PING_MS = 25000;
export const STALE_MS = 65000; // no frame at all for this long: the socket is dead
export const BACKOFF_MIN_MS = 500;
export const BACKOFF_MAX_MS = 10000;
export const STABLE_MS = 5000; // a connection that lived this long resets the backoff
export const MAX_SEND_RETRIES = 5;
export const ACTIVE_RUN = new Set(['queued', 'running', 'retrying']);
export const RETRYABLE_SEND = new Set(['rate_limited', 'unavailable', 'busy', 'internal']);
