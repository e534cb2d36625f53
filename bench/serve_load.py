"""Load test of `maporl serve` on 127.0.0.1: one client asking one question at a time, then C concurrent clients,
every reply checked; what batching concurrent requests into one discussion buys.

    python bench/serve_load.py [SOURCE] [--requests 200] [--clients 16] [--sequential 20] [--max-seconds 900]
    python bench/serve_load.py --smoke   # seconds: 2 requests one at a time, then 8 from 4 clients

Starts `maporl serve` (default: no source, the embedded team, untrained) as a subprocess on a free loopback port,
waits for /health and sends one warm-up request. Then a single client sends `--sequential` requests one after the
other (requests/s of a server that never batches: each discussion runs alone), and `--clients` threads send
`--requests` requests between them (concurrent requests are discussed in one batch). Each request is an `a+b-c`
question with its own seed; a reply counts as an error unless it is a 200 with a non-empty answer and one turn per
team turn. No phase starts a request after `--max-seconds` (the run stays bounded in time).
Last line: one JSON object: requests, clients, errors, wall_s, requests_per_s, p50_ms, p99_ms, max_ms,
sequential_requests, sequential_requests_per_s, batched_over_sequential, mean_batch, server_start_s.
--smoke checks that the server and the load test still run (tests/test_serve.py), not the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def ask(url: str, model: str, k: int, turns: int) -> str | None:
    """One chat request (question and seed from `k`); None if the reply is right, else what is wrong with it."""
    rng = random.Random(k)
    a, b, c = rng.randint(1, 99), rng.randint(1, 99), rng.randint(1, 50)
    body = {"model": model, "messages": [{"role": "user", "content": f"What is {a}+{b}-{c}?"}], "seed": k}
    req = urllib.request.Request(
        url + "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            reply = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}: {e.read()[:200]!r}"
    except Exception as e:  # every failure is counted, none stops the test
        return f"{type(e).__name__}: {e}"
    if not reply["choices"][0]["message"]["content"] or len(reply["maporl"]["turns"]) != turns:
        return f"bad reply: {json.dumps(reply)[:200]}"
    return None


def load(url: str, model: str, turns: int, requests: int, clients: int, first: int, deadline: float) -> dict:
    """`requests` requests from `clients` threads, each taking the next request number until none is left."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    numbers = iter(range(first, first + requests))

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                k = next(numbers, None)
            if k is None:
                return
            t0 = time.perf_counter()
            err = ask(url, model, k, turns)
            with lock:
                latencies.append(time.perf_counter() - t0)
                if err:
                    errors.append(err)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"latencies": latencies, "errors": errors, "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", nargs="?", help="what `maporl serve` serves (default: the embedded team)")
    ap.add_argument("--smoke", action="store_true", help="seconds, tiny sizes: that the server and test run (CI)")
    ap.add_argument("--requests", type=int, help="concurrent phase: requests in all (default 200)")
    ap.add_argument("--clients", type=int, help="concurrent phase: clients (default 16)")
    ap.add_argument("--sequential", type=int, help="requests from one client, one at a time (default 20)")
    ap.add_argument("--max-seconds", type=float, default=900.0, help="no request starts after this (default 900)")
    ap.add_argument("--max-batch", type=int, default=32, help="maporl serve --max-batch")
    ap.add_argument("--wait-ms", type=float, default=10.0, help="maporl serve --wait-ms")
    ap.add_argument("--threads", type=int, help="maporl serve --threads (default: its own)")
    args = ap.parse_args()
    sizes = (8, 4, 2) if args.smoke else (200, 16, 20)
    for name, default in zip(("requests", "clients", "sequential"), sizes, strict=True):
        setattr(args, name, getattr(args, name) or default)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "maporl.cli",
        "serve",
        *([args.source] if args.source else []),
        "--port",
        str(port),
        "--max-batch",
        str(args.max_batch),
        "--wait-ms",
        str(args.wait_ms),
        *(["--threads", str(args.threads)] if args.threads else []),
    ]
    started = time.perf_counter()
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(1200):
            try:
                health = get(url + "/health")
                break
            except OSError:
                if server.poll() is not None:
                    sys.exit(f"server exited: {server.stderr.read()[-2000:]}")
                time.sleep(0.1)
        else:
            sys.exit("the server did not answer /health within 120 s")
        server_start = time.perf_counter() - started
        model = health["model"]
        card = get(url + "/v1/models")["data"][0]["maporl"]
        if err := ask(url, model, 0, card["turns"]):  # warm-up: first-call costs stay out of both phases
            sys.exit(f"warm-up request failed: {err}")
        deadline = time.monotonic() + args.max_seconds
        alone = load(url, model, card["turns"], args.sequential, 1, 1, deadline)
        before = get(url + "/health")
        together = load(url, model, card["turns"], args.requests, args.clients, 1 + args.sequential, deadline)
        after = get(url + "/health")
    finally:
        server.terminate()
        server.wait(30)
    lat = together["latencies"]
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else lat * 99
    rps = len(lat) / together["wall"]
    sequential_rps = len(alone["latencies"]) / alone["wall"]
    batches = after["batches"] - before["batches"]
    result = {
        "requests": len(lat),
        "clients": args.clients,
        "errors": len(together["errors"]) + len(alone["errors"]),
        "wall_s": round(together["wall"], 2),
        "requests_per_s": round(rps, 2),
        "p50_ms": round(1000 * statistics.median(lat), 1),
        "p99_ms": round(1000 * q[98], 1),
        "max_ms": round(1000 * max(lat), 1),
        "sequential_requests": len(alone["latencies"]),
        "sequential_requests_per_s": round(sequential_rps, 2),
        "batched_over_sequential": round(rps / sequential_rps, 2),
        "mean_batch": round((after["requests"] - before["requests"]) / max(batches, 1), 1),
        "server_start_s": round(server_start, 1),
    }
    team = f"{model}, {card['num_agents']} agents x {card['turns']} turns, {card['max_new_tokens']} new tokens"
    print(f"{team}: server up in {result['server_start_s']} s")
    print(
        f"one client, one at a time: {result['sequential_requests']} requests, "
        f"{result['sequential_requests_per_s']} requests/s"
    )
    print(
        f"{result['requests']} requests from {args.clients} clients: {result['errors']} errors, "
        f"{result['requests_per_s']} requests/s (x{result['batched_over_sequential']} one at a time), "
        f"latency p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms; {result['mean_batch']} requests a batch"
    )
    for err in (together["errors"] + alone["errors"])[:3]:
        print("error:", err)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
