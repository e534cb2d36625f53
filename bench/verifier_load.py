"""Load test of `maporl verifier serve` on 127.0.0.1: N requests from C concurrent clients, every answer checked.

    python bench/verifier_load.py --model runs/verifier/model [--requests 2000] [--clients 8] [--items 4]
    python bench/verifier_load.py --smoke   # seconds: 16 requests from 2 clients to an untrained verifier

Starts the server as a subprocess on a free port, waits for /health, sends the requests (each with `--items`
synthetic question/response pairs), and prints the error count, throughput and latency percentiles.
Last line: one JSON object: requests, clients, items_per_request, errors, wall_s, requests_per_s, p50_ms, p99_ms,
max_ms.
--smoke checks that the server and the load test still run (tests/test_bench_smoke.py), not the figures: without
--model it serves a classifier verifier made here from the embedded base with an untrained score head, and sends 16
requests of 2 items from 2 clients (flags given after --smoke win).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def untrained_verifier(out: Path) -> str:
    """A classifier verifier directory: the embedded base's weights under a sequence-classification config, so the
    server loads it with a new (random) score head. Made without importing torch."""
    base = Path(importlib.util.find_spec("maporl").submodule_search_locations[0]) / "assets" / "base"
    shutil.copytree(base, out)
    config = json.loads((out / "config.json").read_text())
    config |= {"architectures": ["Qwen2ForSequenceClassification"], "id2label": {"0": "LABEL_0"}}
    (out / "config.json").write_text(json.dumps(config | {"label2id": {"LABEL_0": 0}}, indent=2))
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a `maporl verifier train` directory (required without --smoke)")
    ap.add_argument("--smoke", action="store_true", help="seconds, tiny sizes: that the server and test run (CI)")
    ap.add_argument("--requests", type=int)
    ap.add_argument("--clients", type=int)
    ap.add_argument("--items", type=int)
    args = ap.parse_args()
    sizes = (16, 2, 2) if args.smoke else (2000, 8, 4)
    for name, default in zip(("requests", "clients", "items"), sizes, strict=True):
        setattr(args, name, getattr(args, name) or default)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            if not args.smoke:
                ap.error("--model is required (or --smoke)")
            args.model = untrained_verifier(Path(tmp) / "verifier")
        load_test(args)


def load_test(args: argparse.Namespace) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "maporl.cli", "verifier", "serve", "--model", args.model, "--port", str(port)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(url + "/health", timeout=1):
                    break
            except OSError:
                if server.poll() is not None:
                    sys.exit(f"server exited: {server.stderr.read()[-2000:]}")
                time.sleep(0.1)
        items = [
            {"question": f"What is {a}+{a + 7}-{a % 5}?", "response": f"{a}+{a + 7}={2 * a + 7}. The answer is {a}."}
            for a in range(args.items)
        ]
        body = json.dumps({"items": items}).encode()
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        per_client = [args.requests // args.clients + (k < args.requests % args.clients) for k in range(args.clients)]

        def client(n: int) -> None:
            for _ in range(n):
                req = urllib.request.Request(url + "/score", body, {"Content-Type": "application/json"})
                t0 = time.perf_counter()
                try:
                    with urllib.request.urlopen(req, timeout=60) as resp:
                        scores = json.loads(resp.read())["scores"]
                    ok = len(scores) == len(items) and all(0.0 <= s <= 1.0 for s in scores)
                    err = None if ok else "bad scores"
                except Exception as e:  # every failure is counted, none stops the test
                    err = f"{type(e).__name__}: {e}"
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    if err:
                        errors.append(err)

        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(n,)) for n in per_client]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(10)
    q = statistics.quantiles(latencies, n=100)
    result = {
        "requests": len(latencies),
        "clients": args.clients,
        "items_per_request": args.items,
        "errors": len(errors),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * q[98], 1),
        "max_ms": round(1000 * max(latencies), 1),
    }
    head = f"{result['requests']} requests from {args.clients} clients, {args.items} items each"
    print(f"{head}: {result['errors']} errors")
    print(f"{result['requests_per_s']} requests/s; latency p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
    if errors:
        print("first errors:", errors[:3])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
