// Constants shared by the page's modules.

export const API = '/api/v1';
export const KEY_AUTH = 'chat.auth'; // {access_token, expires_at, username}; the refresh token is an HttpOnly cookie
export const KEY_OUTBOX = 'chat.outbox'; // {username, items: [{frame, status, error, permanent}]}
export const KEY_AGENT = 'chat.agent'; // last agent picked for new chats
export const KEY_SEEN = 'chat.seen'; // {username, seqs: {session id: highest seq seen}}
export const KEY_STOPPED = 'chat.stopped'; // {run id: {session_id, text}}: output of stopped replies
export const WAIT_REFRESH_MS = 30000; // the console re-renders queue wait times this often
export const SESSIONS_POLL_MS = 20000; // the session list refreshes (unread markers) this often
export const TYPING_EVERY_MS = 3000;
export const TYPING_IDLE_MS = 4000;
export const PRESENCE_TTL_MS = 8000;
// Until /me answers: the server's defaults.
export const DEFAULT_LIMITS = { max_content_bytes: 16384, max_ws_frame_bytes: 65536 };
export const CLOSED_STATUSES = new Set(['ended', 'resolved', 'expired']);
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
