"""`maporl verifier serve` and its client: scoring, health, bad requests (4xx), server down, request batching."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from maporl.errors import UsageError


class FakeVerifier:
    def probabilities(self, pairs):
        return [min(1.0, len(r) / 100) for _, r in pairs]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    uvicorn = pytest.importorskip("uvicorn")
    from maporl.verifiers.api import create_app

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(FakeVerifier()), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(5)


def post(url, body: bytes):
    req = urllib.request.Request(url + "/score", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_server_scores_and_health(server):
    with urllib.request.urlopen(server + "/health", timeout=10) as resp:
        assert json.loads(resp.read())["status"] == "ok"
    items = [{"question": "q", "response": "x" * 50}, {"question": "q", "response": ""}]
    assert post(server, json.dumps({"items": items}).encode()) == (200, {"scores": [0.5, 0.0]})


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (b"{not json", 422, "JSON"),
        (json.dumps({"items": [{"question": "q"}]}).encode(), 422, "response"),
        (json.dumps({"items": []}).encode(), 422, "at least 1"),
        (json.dumps({"items": [{"question": "q", "response": 5}]}).encode(), 422, "string"),
        (json.dumps({"items": [{"question": "q", "response": "x" * 20_001}]}).encode(), 422, "at most 20000"),
        (json.dumps({"items": [{"question": "q", "response": "r"}] * 257}).encode(), 413, "limit of 256"),
    ],
)
def test_server_rejects_bad_requests(server, body, status, fragment):
    code, payload = post(server, body)
    assert code == status and fragment in json.dumps(payload)


def test_server_rejects_an_oversized_body_from_its_header(server):
    import http.client

    host, port = server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/score")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(50_000_000))  # announced, never sent: rejected before reading
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and "byte limit" in json.loads(resp.read())["detail"]


def test_client_round_trip_and_server_down(server):
    from maporl.verifiers.client import HTTPVerifier

    assert HTTPVerifier(server).probabilities([("q", "x" * 10)] * 300) == [0.1] * 300  # split into 2 requests
    down = HTTPVerifier(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.01, timeout=1)
    start = time.time()
    with pytest.raises(UsageError, match="unreachable after 2 tries.*maporl verifier serve"):
        down.probabilities([("q", "r")])
    assert time.time() - start < 5


def test_batcher_scores_concurrent_requests_together_and_in_order():
    from maporl.verifiers.api import Batcher

    calls = []

    def slow_score(pairs):
        calls.append(len(pairs))
        time.sleep(0.05)
        return [float(len(r)) for _, r in pairs]

    batcher = Batcher(slow_score)
    results = {}

    def client(k):
        results[k] = batcher([("q", "x" * k), ("q", "y" * (k + 100))])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {k: [float(k), float(k + 100)] for k in range(8)}
    assert sum(calls) == 16 and len(calls) < 8  # later arrivals were scored together

    def broken(pairs):
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError, match="model failed"):
        Batcher(broken)([("q", "r")])
