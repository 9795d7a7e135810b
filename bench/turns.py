"""REST turn throughput: N concurrent clients, each posting to its own session
(`POST /api/v1/sessions/{id}/messages`, plain JSON answer once the reply is
stored) as fast as the answers come back, for a fixed time. Reports turns/s
and latency percentiles of the completed turns.

    pip install aiohttp
    python3 bench/turns.py --concurrency 8 --seconds 20

The gateway's message and API rate limits must be raised for this, e.g.
`gateway --message-rate-limit 100000000 --rate-limit-max-requests 100000000`.
Every turn must come back 200 with a completed run and a reply; anything
else counts as an error and is reported.
"""

import argparse
import asyncio
import json
import time

import aiohttp


async def post(http: aiohttp.ClientSession, url: str, body: dict, token: str | None = None) -> dict:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with http.post(url, json=body, headers=headers) as response:
        text = await response.text()
        if response.status >= 300:
            raise RuntimeError(f"{url}: {response.status} {text}")
        return json.loads(text or "{}")


async def client(http, base, token, session_id, deadline, measure_from, latencies, errors, warmup):
    url = f"{base}/sessions/{session_id}/messages"
    headers = {"authorization": f"Bearer {token}"}
    n = 0
    while True:
        started = time.perf_counter()
        if started >= deadline:
            return
        n += 1
        async with http.post(url, json={"content": f"hello {n}"}, headers=headers) as response:
            body = await response.read()
            ok = (
                response.status == 200
                and (posted := json.loads(body))["run"]["status"] == "completed"
                and posted["reply"] is not None
            )
        ended = time.perf_counter()
        if started < measure_from:
            warmup.append(ok)
            continue
        if ok:
            latencies.append(ended - started)
        else:
            errors.append(f"{response.status} {body[:200]!r}")


def percentile(sorted_values: list, p: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", default="127.0.0.1:3006", help="gateway host:port")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20, help="measured time")
    parser.add_argument("--warmup", type=float, default=3, help="seconds before measuring")
    parser.add_argument("--agent", default="echo")
    args = parser.parse_args()

    base = f"http://{args.gateway}/api/v1"
    connector = aiohttp.TCPConnector(limit=args.concurrency + 2)
    async with aiohttp.ClientSession(connector=connector) as http:
        user = f"turns{time.time_ns()}"
        await post(http, f"{base}/auth/register", {"username": user, "password": "benchmark-password"})
        token = (await post(http, f"{base}/auth/login", {"username": user, "password": "benchmark-password"}))[
            "access_token"
        ]
        sessions = [
            (await post(http, f"{base}/sessions", {"agent": args.agent}, token))["id"]
            for _ in range(args.concurrency)
        ]
        latencies: list = []
        errors: list = []
        warmup: list = []
        measure_from = time.perf_counter() + args.warmup
        deadline = measure_from + args.seconds
        await asyncio.gather(*(
            client(http, base, token, s, deadline, measure_from, latencies, errors, warmup) for s in sessions
        ))
    latencies.sort()
    print(json.dumps({
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "turns": len(latencies),
        "warmup_turns": len(warmup),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "turns_per_s": round(len(latencies) / args.seconds, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
    }))


if __name__ == "__main__":
    asyncio.run(main())
