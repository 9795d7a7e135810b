#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/: a few small, valid
inputs per target (and a few near misses), made by hand so they stay readable.
Run it after changing a target's input layout; see docs/fuzzing.md."""

import base64
import hashlib
import hmac
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"
SESSION = "0190f5c2-7b1e-7cc0-8000-000000000000"
RUN = "0190f5c2-7b1e-7cc0-8000-0000000000aa"


def write(target, name, data):
    path = ROOT / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def j(value):
    return json.dumps(value, separators=(",", ":"))


# === client_frame: WebSocket text frames ===

frames = {
    "ping": {"type": "ping"},
    "auth": {"type": "auth", "access_token": "eyJ.x.y"},
    "subscribe": {"type": "subscribe", "session_id": SESSION, "after_seq": 3},
    "subscribe_upper": {"type": "subscribe", "session_id": SESSION.upper()},
    "unsubscribe": {"type": "unsubscribe", "session_id": SESSION},
    "send": {"type": "send", "session_id": SESSION, "client_msg_id": "c-1", "content": "hello"},
    "send_unicode": {"type": "send", "session_id": SESSION, "client_msg_id": "c-2", "content": "h\u00e9\u2603 \ud83d\ude00"},
    "cancel": {"type": "cancel", "session_id": SESSION, "run_id": RUN},
    "send_no_id": {"type": "send", "session_id": SESSION, "content": "hi"},
    "unknown": {"type": "dance"},
    "wrong_types": {"type": "subscribe", "session_id": 7, "after_seq": "x"},
}
for name, frame in frames.items():
    write("client_frame", name, j(frame))
write("client_frame", "nested", "[" * 40 + "]" * 40)
write("client_frame", "malformed", '{"type":"send",')

# === rest_bodies: a route byte, then the body ===

bodies = [
    (0, "credentials", {"username": "alice", "password": "correct horse"}),
    (1, "refresh", {"refresh_token": "abc"}),
    (2, "logout", {"refresh_token": "abc"}),
    (3, "create_session", {"title": "t", "agent": "echo", "metadata": {"k": [1, {"x": None}]}, "concurrency": "reject"}),
    (4, "resolve", {"notes": "done"}),
    (5, "post_message", {"content": "hi", "client_msg_id": "c-1"}),
]
for route, name, body in bodies:
    write("rest_bodies", name, bytes([route]) + j(body).encode())
write("rest_bodies", "logout_empty", bytes([2]))
write("rest_bodies", "create_wrong_types", bytes([3]) + b'{"title":1,"metadata":[]}')

# === tokens: mode 0 + a token, or mode 1 + claims for the round trip ===


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(header, claims, secret=b"fuzz-secret"):
    signing = f"{b64(j(header).encode())}.{b64(j(claims).encode())}"
    mac = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(mac)}"


claims = {"sub": "u1", "role": "user", "iss": "chat-backend", "iat": 1700000000, "exp": 4102444800, "jti": "j"}
hs256 = {"alg": "HS256", "typ": "JWT"}
write("tokens", "valid_user", "\0" + jwt(hs256, claims))
write("tokens", "valid_service", "\0" + jwt(hs256, {**claims, "role": "service"}))
write("tokens", "expired", "\0" + jwt(hs256, {**claims, "exp": 1700000100}))
write("tokens", "other_issuer", "\0" + jwt(hs256, {**claims, "iss": "evil"}))
write("tokens", "other_secret", "\0" + jwt(hs256, claims, b"nope"))
write("tokens", "alg_none", "\0" + jwt({"alg": "none"}, claims).rsplit(".", 1)[0] + ".")
write("tokens", "bearer", "\0Bearer  abc ")
write("tokens", "round_trip", b"\1" + bytes([1, 60, 0, 0, 0, 7, 0, 0x41]) + b"user-1")

# === proto_requests: a type byte (index in TYPES), then the encoding ===


def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(field, text):
    data = text.encode() if isinstance(text, str) else text
    return varint(field << 3 | 2) + varint(len(data)) + data


def v(field, n):
    return varint(field << 3) + varint(n)


messages = [
    ("create_session", 0, s(1, "t") + s(2, "echo") + s(3, '{"a":1}') + s(5, "reject")),
    ("get_session", 1, s(1, SESSION)),
    ("list_sessions", 2, s(1, "active") + v(2, 20) + s(3, "cursor")),
    ("resolve_session", 3, s(1, SESSION) + s(2, "notes")),
    ("end_session", 4, s(1, SESSION)),
    ("hand_back", 5, s(1, SESSION) + s(2, "echo")),
    ("delete_session", 6, s(1, SESSION)),
    ("list_messages", 7, s(1, SESSION) + v(2, 3) + v(3, -1) + v(4, 50)),
    ("send_message", 8, s(1, SESSION) + s(2, "c-1") + s(3, "hi") + s(4, "human")),
    ("subscribe", 9, s(1, SESSION) + v(2, 4)),
    ("cancel_run", 10, s(1, SESSION) + s(2, RUN)),
    ("list_agents", 11, b""),
    ("register", 12, s(1, "alice") + s(2, "pw")),
    ("verify_password", 13, s(1, "alice") + s(2, "pw")),
    ("issue_refresh", 14, s(1, "u1") + v(2, 3600)),
    ("rotate_refresh", 15, s(1, "tok") + v(2, 3600)),
    ("revoke_refresh", 16, s(1, "tok")),
    ("ensure_external_user", 17, s(1, "https://idp") + s(2, "sub")),
    ("client_frame_send", 18, s(3, s(1, SESSION) + s(2, "c-1") + s(3, "hi") + s(4, s(1, "traceparent") + s(2, "00-x")))),
    ("client_frame_ping", 18, s(5, b"")),
    ("server_frame_error", 19, s(4, s(1, "invalid") + s(2, "bad") + v(5, 1000))),
    ("server_frame_run", 19, s(3, s(2, s(1, SESSION) + s(2, RUN) + v(3, 2) + v(5, 1)))),
    ("run_request", 20, s(1, RUN) + s(2, SESSION) + s(3, "echo") + v(4, 1) + s(5, v(1, 1) + s(2, "user") + s(4, "hi")) + s(6, "{}")),
    ("agent_list_agents", 21, b""),
    ("run_event_delta", 22, s(1, s(1, "he"))),
    ("run_event_error", 22, s(3, s(1, "boom") + s(2, "m") + v(3, 1))),
]
for name, index, encoded in messages:
    write("proto_requests", name, bytes([index]) + encoded)

if __name__ == "__main__":
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    print(f"wrote {sum(1 for p in ROOT.rglob('*') if p.is_file())} seeds ({total} bytes) under {ROOT}")
