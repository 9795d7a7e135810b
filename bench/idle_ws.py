"""Idle WebSocket cost: opens N authenticated, subscribed WebSockets to a
gateway and reports how much the gateway's resident memory grew per socket
(and chat-core's, with --core-pid: each subscribed socket holds a stream there).

    pip install websockets
    python3 bench/idle_ws.py --gateway-pid $(pgrep -f 'release/gateway') \
        --core-pid $(pgrep -f 'release/chat-core') --connections 5000

The gateway must be running (its own process, so its RSS is its own) with a
chat-core behind it. Sources are spread over 127.0.0.x addresses so more than
one source address's worth of ephemeral ports can be used.
"""

import argparse
import asyncio
import json
import sys
import time
import urllib.request

import websockets


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def post(base: str, path: str, body: dict, token: str | None = None) -> dict:
    request = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(), method="POST")
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read() or b"{}")


async def open_socket(url: str, token: str, session_id: str, source: str, sockets: list):
    ws = await websockets.connect(
        f"{url}?access_token={token}", local_addr=(source, 0), max_size=2**16, ping_interval=None
    )
    await ws.send(json.dumps({"type": "subscribe", "session_id": session_id, "after_seq": 0}))
    await ws.recv()
    sockets.append(ws)


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", default="127.0.0.1:3006", help="gateway host:port")
    parser.add_argument("--gateway-pid", type=int, required=True, help="pid of the gateway process")
    parser.add_argument("--core-pid", type=int, help="pid of chat-core, to report its growth too")
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=200, help="connections opened concurrently")
    args = parser.parse_args()

    base = f"http://{args.gateway}/api/v1"
    user = f"bench{int(time.time())}"
    post(base, "/auth/register", {"username": user, "password": "benchmark-password"})
    token = post(base, "/auth/login", {"username": user, "password": "benchmark-password"})["access_token"]
    session_id = post(base, "/sessions", {"agent": "echo"}, token)["id"]

    before = rss_kib(args.gateway_pid)
    core_before = rss_kib(args.core_pid) if args.core_pid else None
    sockets: list = []
    started = time.time()
    for start in range(0, args.connections, args.batch):
        batch = range(start, min(start + args.batch, args.connections))
        await asyncio.gather(*(
            open_socket(f"ws://{args.gateway}/api/v1/ws", token, session_id, f"127.0.0.{2 + i % 50}", sockets)
            for i in batch
        ))
        print(f"\r{len(sockets)}/{args.connections} connected", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    await asyncio.sleep(2)
    after = rss_kib(args.gateway_pid)
    per_socket = (after - before) / len(sockets)
    report = {
        "connections": len(sockets),
        "gateway_rss_before_kib": before,
        "gateway_rss_after_kib": after,
        "kib_per_idle_socket": round(per_socket, 2),
        "seconds_to_connect": round(time.time() - started, 1),
    }
    if args.core_pid:
        core_after = rss_kib(args.core_pid)
        core_per_socket = (core_after - core_before) / len(sockets)
        report.update({
            "core_rss_before_kib": core_before,
            "core_rss_after_kib": core_after,
            "core_kib_per_idle_socket": round(core_per_socket, 2),
            "gateway_plus_core_kib_per_idle_socket": round(per_socket + core_per_socket, 2),
        })
    print(json.dumps(report))
    for ws in sockets:
        await ws.close()


if __name__ == "__main__":
    asyncio.run(main())
