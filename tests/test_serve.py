"""`maporl serve`: the OpenAI client against a live server (replies, streaming, models, keys), every bad request a 4xx
in the OpenAI error shape with the server still serving, concurrent requests in one discussion batch, per-request
seeds, and the load benchmark's smoke run."""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from maporl.config import load_config  # noqa: E402
from maporl.generation import Completion  # noqa: E402
from maporl.records import Answer, Problem, Transcript  # noqa: E402
from maporl.serving.protocol import APIError, Limits, final_answer, parse_chat_request  # noqa: E402
from maporl.serving.server import Settings, create_app, default_model_id  # noqa: E402

ROOT = Path(__file__).parents[1]
MODEL = "team"
QUESTION = "What is 17+25-9?"


class FakeGenerator:
    """Answers 'The answer is (seed % 3).' from each row's seed, so a reply shows which seeds its rows got; records
    the rows of every call. `fail_at`: the call (0-based) that raises instead; `delay`: seconds per call."""

    def __init__(self, delay: float = 0.0, fail_at: int | None = None):
        self.calls: list[int] = []
        self.delay, self.fail_at = delay, fail_at
        self.tokens_generated, self.weights_version = 0, 7

    def generate(self, requests):
        self.calls.append(len(requests))
        if self.fail_at is not None and len(self.calls) - 1 == self.fail_at:
            raise RuntimeError("the model fell over")
        time.sleep(self.delay)
        return [Completion(f"The answer is {r.seed % 3}.", False, (1, 2, 3)) for r in requests]


def team_cfg(*extra: str):
    return load_config(None, ["discussion.num_agents=3", "discussion.turns=2", *extra])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app):
    """The app on a free loopback port, in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def live():
    """A server over a FakeGenerator team (3 agents x 2 turns) with an API key."""
    generator = FakeGenerator()
    app = create_app(team_cfg(), generator, MODEL, Settings(api_key="sekret", wait_ms=0))
    with running(app) as url:
        yield url, generator, app


def client(url: str, key: str = "sekret"):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


def ask(url: str, question: str = QUESTION, **fields):
    """One chat request of `question` through the OpenAI client."""
    return client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}], **fields)


def seeded_answer(seed: int, agent: int, turn: int) -> str:
    from maporl.discussion import sample_seed

    return str(sample_seed(seed, 0, 0, agent, turn) % 3)


def test_the_openai_client_gets_the_teams_answer_and_discussion(live):
    url, _, _ = live
    reply = client(url).chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}],
        seed=5,
        temperature=0.2,  # accepted and ignored: the team's config decides sampling
        max_tokens=16,
    )
    turns = reply.maporl["turns"]
    assert [[a["agent"] for a in turn] for turn in turns] == [[0, 1, 2], [0, 1, 2]]
    assert [a["parsed"] for a in turns[1]] == [seeded_answer(5, i, 1) for i in range(3)]
    from maporl.evaluation import majority

    expected = majority([a["parsed"] for a in turns[1]])
    assert reply.choices[0].message.content == expected == reply.maporl["answer"]
    assert reply.choices[0].finish_reason == "stop" and reply.model == MODEL and reply.object == "chat.completion"
    assert reply.maporl["seed"] == 5 and reply.maporl["weights_version"] == 7
    assert reply.usage.completion_tokens == 3 * 6 and reply.usage.total_tokens == reply.usage.prompt_tokens + 18


def test_the_openai_client_streams_each_turn_then_the_answer(live):
    url, _, _ = live
    stream = client(url).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": QUESTION}],
        seed=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    turns = [c.maporl["turn"] for c in chunks if c.model_extra.get("maporl", {}).get("turn") is not None]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert turns == [0, 1]
    whole = ask(url, seed=5)
    assert content == whole.choices[0].message.content  # streamed or not, the same answer
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 18


def test_models_lists_the_one_team_and_a_wrong_key_is_refused(live):
    url, _, _ = live
    assert [m.id for m in client(url).models.list()] == [MODEL]
    assert client(url).models.retrieve(MODEL).maporl["num_agents"] == 3
    with pytest.raises(openai.NotFoundError):
        client(url).models.retrieve("other")
    with pytest.raises(openai.AuthenticationError) as e:
        client(url, key="wrong").chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as e:
        client(url).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found"


def post(url: str, body: bytes | dict, key: str | None = "sekret", headers: dict | None = None):
    import httpx

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    resp = httpx.post(url + "/v1/chat/completions", content=data, headers={**auth, **(headers or {})}, timeout=30)
    return resp.status_code, resp.json()


def chat(**fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}], **fields}


BAD = {
    "malformed JSON": (b'{"model": "team", "messages": [', 400, "not valid JSON"),
    "not an object": (b"[1, 2]", 400, "JSON object"),
    "no model": ({"messages": [{"role": "user", "content": "q"}]}, 400, "model is required"),
    "unknown model": (chat(model="gpt-4o"), 404, "does not exist"),
    "no messages": (chat(messages=[]), 400, "non-empty list"),
    "no user message last": (
        chat(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]),
        400,
        "must be the user's question",
    ),
    "unknown role": (chat(messages=[{"role": "robot", "content": "q"}]), 400, "role must be one of"),
    "empty content": (chat(messages=[{"role": "user", "content": "   "}]), 400, "is empty"),
    "image content": (chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]), 400, "only text"),
    "too many messages": (chat(messages=[{"role": "user", "content": "q"}] * 9), 400, "over the limit of 8"),
    "content too long": (chat(messages=[{"role": "user", "content": "9" * 501}]), 400, "over the limit of 500"),
    "max_tokens too large": (chat(max_tokens=10**6), 400, "max_tokens must be an integer from 1 to 64"),
    "seed not an integer": (chat(seed="7"), 400, "seed must be an integer"),
    "stream not a boolean": (chat(stream="yes"), 400, "stream must be true or false"),
    "n of 2": (chat(n=2), 400, "n must be 1"),
    "tools": (chat(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "tools are not supported"),
    "oversize body": (chat(messages=[{"role": "user", "content": "q" * 400}] * 8), 413, "byte limit"),
}


@pytest.fixture(scope="module")
def strict():
    """A server with small limits, no key."""
    generator = FakeGenerator()
    limits = Limits(max_body_bytes=3_000, max_messages=8, max_content_chars=500, max_tokens=64)
    with running(create_app(team_cfg(), generator, MODEL, Settings(wait_ms=0, limits=limits))) as url:
        yield url, generator


@pytest.mark.parametrize("body, status, fragment", BAD.values(), ids=BAD.keys())
def test_every_bad_request_gets_an_openai_error_and_the_server_keeps_serving(strict, body, status, fragment):
    url, generator = strict
    calls = len(generator.calls)
    code, payload = post(url, body, key=None)
    assert code == status and fragment in payload["error"]["message"], payload
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert payload["error"]["type"] == "invalid_request_error" and len(generator.calls) == calls  # nothing generated
    assert post(url, chat(), key=None)[0] == 200


def test_an_oversize_body_is_refused_from_its_header_or_as_it_streams_in(strict):
    import http.client

    url, _ = strict
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/v1/chat/completions")
    conn.putheader("Content-Length", str(50_000_000))  # announced, never sent: refused before reading
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error"]["code"] == "request_too_large"
    chunked = (b"x" * 1000 for _ in range(10))  # no Content-Length: counted as it arrives
    import httpx

    resp = httpx.post(url + "/v1/chat/completions", content=chunked, timeout=10)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large"


def test_the_key_guards_v1_but_not_health(live):
    import httpx

    url, _, _ = live
    code, payload = post(url, chat(), key=None)
    assert code == 401 and "no API key" in payload["error"]["message"]
    assert httpx.get(url + "/health").json()["status"] == "ok"
    assert httpx.get(url + "/v1/models").status_code == 401
    assert httpx.get(url + "/nowhere").json()["error"]["message"] == "Not Found"


def test_concurrent_requests_are_discussed_in_one_batch_each_with_its_own_seed():
    generator = FakeGenerator()
    app = create_app(team_cfg(), generator, MODEL, Settings(max_batch=2, wait_ms=2_000))
    with running(app) as url:
        replies = {}

        def one(seed):
            replies[seed] = ask(url, seed=seed)

        threads = [threading.Thread(target=one, args=(seed,)) for seed in (11, 12)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        # max_batch=2 filled: the batch ran at once, not after the 2-second window.
        assert time.monotonic() - start < 1.5
        assert generator.calls == [6, 6] and app.state.batcher.batch_sizes == [2]  # 2 turns x (2 requests x 3 agents)
        for seed, reply in replies.items():
            assert [[a["parsed"] for a in turn] for turn in reply.maporl["turns"]] == [
                [seeded_answer(seed, i, t) for i in range(3)] for t in range(2)
            ]


def test_a_failed_discussion_is_a_500_for_its_requests_and_the_next_one_is_served():
    generator = FakeGenerator(fail_at=0)
    with running(create_app(team_cfg(), generator, MODEL, Settings(wait_ms=0))) as url:
        code, payload = post(url, chat(), key=None)
        assert code == 500 and payload["error"]["type"] == "server_error"
        assert "fell over" in payload["error"]["message"]
        generator.fail_at = 2  # the second turn of the next discussion: the stream has started, the error is data
        with pytest.raises(openai.APIError, match="fell over"):
            list(ask(url, "q", stream=True))
        assert post(url, chat(), key=None)[0] == 200


def test_a_request_that_came_during_a_batch_waits_for_the_clients_just_answered():
    """Its window counts from the batch's end: the next question of a client answered by that batch joins it."""
    from maporl.serving.batcher import DiscussionBatcher
    from maporl.tasks import get_task

    gate = threading.Event()

    class Gated(FakeGenerator):
        def generate(self, requests):
            gate.wait(10)
            return super().generate(requests)

    cfg = team_cfg()
    batcher = DiscussionBatcher(Gated(), get_task(cfg.task.name), cfg.discussion, wait_ms=300)
    first: queue.Queue = queue.Queue()
    batcher.submit("q", 1, first.put)
    assert first.get(timeout=5) == ("started",)  # running, held at the gate
    batcher.submit("q", 2, lambda event: None)  # arrives during the batch
    gate.set()
    while first.get(timeout=5)[0] != "done":
        pass
    batcher.submit("q", 3, lambda event: None)  # the answered client's next question, right after the batch
    batcher.close()
    assert batcher.batch_sizes == [1, 2]


def test_a_full_queue_is_refused_at_once():
    from maporl.serving.batcher import DiscussionBatcher
    from maporl.tasks import get_task

    gate = threading.Event()

    class Blocked(FakeGenerator):
        def generate(self, requests):
            gate.wait(10)
            return super().generate(requests)

    cfg = team_cfg()
    batcher = DiscussionBatcher(Blocked(), get_task(cfg.task.name), cfg.discussion, wait_ms=0, max_queue=1)
    events: queue.Queue = queue.Queue()
    batcher.submit("q", 1, events.put)
    assert events.get(timeout=5) == ("started",)  # taken by the worker, which now waits on the gate
    batcher.submit("q", 2, events.put)  # waits in the queue
    with pytest.raises(queue.Full):
        batcher.submit("q", 3, events.put)
    gate.set()
    batcher.close()  # finishes the batch running; what still waits is told the server shut down
    seen = [events.get(timeout=5) for _ in range(events.qsize())]
    assert [e[0] for e in seen] == ["turn", "turn", "done", "error"] and batcher.batch_sizes == [1]
    assert "shut down" in str(seen[-1][1])


def test_final_answer_is_the_majority_with_evaluations_tie_rule_and_never_empty():
    def transcript(*answers):
        last = tuple(Answer(i, 0, (), text, parsed, truncated) for i, (text, parsed, truncated) in enumerate(answers))
        return Transcript(Problem("p", "q", "", "arith_chain"), (last,))

    assert final_answer(transcript(("a", "4", False), ("b", "5", False), ("c", "5", False))).content == "5"
    tie = final_answer(transcript(("a", None, False), ("b", "6", False), ("c", "4", False)))
    assert (tie.content, tie.votes) == ("6", 1)  # a tie goes to the lowest-numbered agent that answered
    none = final_answer(transcript((" I think 4 ", None, True), ("", None, False)))
    assert (none.content, none.answer, none.finish_reason) == ("I think 4", None, "length")
    with pytest.raises(APIError, match="max_completion_tokens"):
        parse_chat_request(chat(max_completion_tokens=0), Limits(), MODEL)


def test_default_model_ids(tmp_path):
    assert default_model_id(None) == "maporl-embedded"
    assert default_model_id(tmp_path / "runs" / "tiny") == "tiny"
    assert default_model_id(tmp_path / "tiny" / "checkpoints" / "step_000050") == "tiny-step_000050"


def test_cli_flags_are_checked_before_anything_loads(capsys):
    from maporl.cli import main

    assert main(["serve", "--max-batch", "0"]) == 2
    assert "--max-batch must be >= 1" in capsys.readouterr().err


def test_a_real_team_replies_as_maporl_discuss_does_and_refuses_a_question_over_its_context(tiny_model_dir):
    """The tiny random model as the team: with seed S the served discussion is `api.discuss` with seed=S, token
    counts come from the tokenizer, and a question too long for the model's context is a 400, not a crash."""
    from maporl.api import discuss, load_team

    overrides = [
        f"model.name_or_path={tiny_model_dir}",
        "discussion.num_agents=2",
        "discussion.turns=2",
        "generation.max_new_tokens=8",
    ]
    cfg, generator = load_team(None, None, [*overrides, "seed=3"])
    with running(create_app(cfg, generator, MODEL, Settings(wait_ms=0))) as url:
        reply = ask(url, seed=3)
        code, payload = post(url, chat(messages=[{"role": "user", "content": "1+2 " * 1500}]), key=None)
    expected = discuss(QUESTION, generator=generator, cfg=cfg)
    fields = ("agent", "response", "parsed", "truncated")
    assert reply.maporl["turns"] == [[{k: getattr(a, k) for k in fields} for a in turn] for turn in expected.answers]
    assert reply.usage.completion_tokens == sum(len(a.token_ids) for turn in expected.answers for a in turn)
    from maporl.generation import encode_prompt

    tokenizer = generator.tokenizers[generator.slots[0].model_key]
    prompts = [a.prompt for turn in expected.answers for a in turn]
    assert reply.usage.prompt_tokens == sum(len(encode_prompt(tokenizer, p)) for p in prompts)
    assert code == 400 and payload["error"]["code"] == "context_length_exceeded"


@pytest.mark.slow
def test_the_load_benchmark_smoke_run_serves_the_embedded_team_without_errors():
    """bench/serve_load.py --smoke: `maporl serve` (no source) as a subprocess, a few requests, concurrent and one at
    a time; the last line is the JSON summary."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "serve_load.py"), "--smoke"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == 0 and result["requests"] > 0 and result["sequential_requests_per_s"] > 0
    assert {"p50_ms", "p99_ms", "requests_per_s", "batched_over_sequential"} <= set(result)
