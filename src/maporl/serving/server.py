"""`maporl serve`: a team behind an OpenAI-compatible HTTP API (FastAPI + uvicorn, imported only here and lazily).

    POST /v1/chat/completions   the last user message is the question; the reply is the team's final answer, the
                                whole discussion under `maporl`; `stream: true` sends each turn as it finishes
    GET  /v1/models             the one model id this server answers to
    GET  /health                {"status": "ok", ...}: no key needed

Every refused request gets a 4xx in the OpenAI error shape, {"error": {"message", "type", "param", "code"}}, and the
server goes on serving. Concurrent requests are discussed together (batcher.py). docs/serving.md has the details.
No `from __future__ import annotations` here: FastAPI reads `request: Request` from the endpoint's real annotation.
"""

import asyncio
import hmac
import json
import queue
import secrets
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from maporl.config import Config
from maporl.errors import UsageError
from maporl.generation import Generator, encode_prompt
from maporl.prompts import discussion_prompt, first_turn_prompt, peers_of
from maporl.records import Problem, Transcript
from maporl.serving.batcher import DiscussionBatcher
from maporl.serving.protocol import (
    APIError,
    Limits,
    chunk_body,
    completion_body,
    final_answer,
    new_id,
    parse_chat_request,
    usage_json,
)
from maporl.tasks import Task, get_task
from maporl.tasks.base import problem_id

# A peer's answer is shown cut to 64 characters (prompts.shown): the longest a turn-t prompt can grow per answer.
_LONGEST_SHOWN = "9" * 64


@dataclass(frozen=True)
class Settings:
    """How `maporl serve` runs (its flags of the same names)."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # when set, every /v1 request needs `Authorization: Bearer <api_key>`
    max_batch: int = 32  # requests per discussion batch
    wait_ms: float = 10.0  # how long the oldest waiting request waits for others to join its batch
    max_queue: int = 256  # requests waiting beyond this get 503 (overloaded) at once, instead of a long wait
    threads: int | None = None  # torch CPU threads for generation (None: torch's default, one per core)
    limits: Limits = field(default_factory=Limits)


class TokenCounter:
    """The team's tokenizers and context lengths: a reply's token counts, and the check that a question leaves room
    for the answers in every prompt it will be in. Used on the batcher's worker thread only."""

    def __init__(self, generator: Generator, cfg: Config, task: Task):
        self.cfg, self.task = cfg, task
        self.by_agent: dict[int, tuple[object, int | None]] = {}
        if hasattr(generator, "tokenizers") and hasattr(generator, "slots"):  # HF: a model per key, agents in slots
            for agent, slot in enumerate(generator.slots):
                model = generator.models[slot.model_key]
                context = getattr(model.config, "max_position_embeddings", None)
                self.by_agent[agent] = (generator.tokenizers[slot.model_key], context)
        elif hasattr(generator, "tokenizer"):  # vLLM: one base, one tokenizer, the engine's max_model_len
            pair = (generator.tokenizer, getattr(generator, "max_model_len", None))
            self.by_agent = dict.fromkeys(range(cfg.discussion.num_agents), pair)

    def admit(self, question: str) -> None:
        """Refuse a question whose longest prompt leaves no room for generation.max_new_tokens in the context."""
        d, new_tokens = self.cfg.discussion, self.cfg.generation.max_new_tokens
        text = self.task.render_question(Problem(problem_id(question), question, "", self.task.name))
        shown = [(j, _LONGEST_SHOWN) for j in peers_of(0, d.num_agents, d.peers_shown)]
        prompts = [first_turn_prompt(text)] + ([discussion_prompt(text, _LONGEST_SHOWN, shown)] if d.turns > 1 else [])
        for tokenizer, context in dict.fromkeys(self.by_agent.values()):
            if not context:
                continue
            longest = max(len(encode_prompt(tokenizer, p)) for p in prompts)
            if longest + new_tokens > context:
                raise APIError(
                    400,
                    f"the question makes agent prompts of up to {longest} tokens; with "
                    f"{new_tokens} tokens per answer that is over the model's context of {context} "
                    "tokens: shorten it",
                    "messages",
                    "context_length_exceeded",
                )

    def usage(self, transcript: Transcript) -> dict:
        """Tokens of every prompt the agents read and of every answer they wrote, over all turns."""
        answers = [a for turn in transcript.answers for a in turn]
        known = [a for a in answers if a.agent in self.by_agent]  # none known: a generator without tokenizers
        prompt = sum(len(encode_prompt(self.by_agent[a.agent][0], a.prompt)) for a in known)
        return usage_json(prompt, sum(len(a.token_ids) for a in answers))


def default_model_id(source: str | Path | None) -> str:
    """The id a team answers to: its folder's name (a run's, an export's, a model's); a checkpoint's is its run's
    name and step; the embedded base, untrained, is maporl-embedded."""
    if source is None:
        return "maporl-embedded"
    path = Path(source).expanduser().resolve()
    return f"{path.parent.parent.name}-{path.name}" if path.parent.name == "checkpoints" else path.name


def _as_api_error(error: BaseException) -> APIError:
    if isinstance(error, APIError):
        return error
    return APIError(500, f"the discussion failed: {type(error).__name__}: {error}", None, "discussion_failed")


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def create_app(cfg: Config, generator: Generator, model_id: str = "maporl-embedded", settings: Settings | None = None):
    """The FastAPI app serving the team `generator` samples from (`cfg`: its settings, from `api.load_team`)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    settings = settings or Settings()
    limits, task = settings.limits, get_task(cfg.task.name)
    counter = TokenCounter(generator, cfg, task)
    batcher = DiscussionBatcher(
        generator,
        task,
        cfg.discussion,
        max_batch=settings.max_batch,
        wait_ms=settings.wait_ms,
        max_queue=settings.max_queue,
        admit=counter.admit,
        usage=counter.usage,
    )
    expected = f"Bearer {settings.api_key}".encode() if settings.api_key else None

    @asynccontextmanager
    async def lifespan(app):
        yield
        await asyncio.to_thread(batcher.close)

    app = FastAPI(title="maporl", version="1", lifespan=lifespan)
    app.state.batcher = batcher

    def error(e: APIError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    app.add_exception_handler(APIError, lambda request, e: error(e))
    app.add_exception_handler(HTTPException, lambda request, e: error(APIError(e.status_code, str(e.detail))))
    app.add_exception_handler(Exception, lambda request, e: error(_as_api_error(e)))

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """The key, then the announced body size, before the endpoint reads anything."""
        if not request.url.path.startswith("/v1"):
            return await call_next(request)
        given = request.headers.get("authorization", "").encode()
        if expected is not None and not hmac.compare_digest(given, expected):
            why = "no API key given" if not given else "the API key is wrong"
            return error(APIError(401, f"{why}: send `Authorization: Bearer <key>`", None, "invalid_api_key"))
        size = request.headers.get("content-length", "")
        if size.isdigit() and int(size) > limits.max_body_bytes:
            return error(_too_large(int(size), limits))
        return await call_next(request)

    def model_card() -> dict:
        d, g = cfg.discussion, cfg.generation
        team = {
            "num_agents": d.num_agents,
            "turns": d.turns,
            "task": cfg.task.name,
            "backend": g.backend,
            "temperature": g.temperature,
            "max_new_tokens": g.max_new_tokens,
        }
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "maporl", "maporl": team}

    @app.get("/health")
    def health() -> dict:
        sizes = batcher.batch_sizes
        return {
            "status": "ok",
            "model": model_id,
            "batches": len(sizes),
            "requests": sum(sizes),
            "queued": batcher.queue.qsize(),
            "max_batch": settings.max_batch,
            "wait_ms": settings.wait_ms,
        }

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    def model(name: str) -> dict:
        if name != model_id:
            raise APIError(
                404, f"the model {name!r} does not exist; this server serves {model_id!r}", "model", "model_not_found"
            )
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        raw = bytearray()
        async for part in request.stream():  # counted as it comes: a body sent without its length is bounded too
            raw += part
            if len(raw) > limits.max_body_bytes:
                raise _too_large(len(raw), limits)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise APIError(400, f"the request body is not valid JSON ({e})", None, "invalid_json") from None
        req = parse_chat_request(body, limits, model_id)
        seed = req.seed if req.seed is not None else secrets.randbelow(2**63)
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        try:
            batcher.submit(req.question, seed, lambda event: loop.call_soon_threadsafe(events.put_nowait, event))
        except queue.Full:
            raise APIError(
                503, f"{settings.max_queue} requests are already waiting; try again shortly", None, "overloaded"
            ) from None
        except RuntimeError as e:
            raise APIError(503, str(e), None, "shutting_down") from None
        first = await events.get()  # "started", or the worker's refusal (e.g. a question too long for the context)
        if first[0] == "error":
            raise _as_api_error(first[1])
        rid, created = new_id()
        if not req.stream:
            while (event := await events.get())[0] == "turn":
                pass
            if event[0] == "error":
                raise _as_api_error(event[1])
            return completion_body(rid, created, model_id, event[1], seed, event[2])

        async def chunks():
            yield _sse(chunk_body(rid, created, model_id, {"role": "assistant", "content": ""}))
            while (event := await events.get())[0] == "turn":
                yield _sse(chunk_body(rid, created, model_id, {}, maporl={"turn": event[1], "answers": event[2]}))
            if event[0] == "error":  # mid-stream: the status is sent, so the error goes as a data line (as OpenAI's)
                yield _sse(_as_api_error(event[1]).body())
            else:
                transcript, usage = event[1], event[2]
                final = final_answer(transcript)
                about = {
                    "answer": final.answer,
                    "votes": final.votes,
                    "seed": seed,
                    "weights_version": transcript.meta.get("weights_version"),
                }
                yield _sse(chunk_body(rid, created, model_id, {"content": final.content}, maporl=about))
                yield _sse(chunk_body(rid, created, model_id, {}, final.finish_reason))
                if req.include_usage:
                    yield _sse({**chunk_body(rid, created, model_id, {}), "choices": [], "usage": usage})
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


def _too_large(size: int, limits: Limits) -> APIError:
    return APIError(
        413,
        f"the request body of {size} bytes is over the {limits.max_body_bytes}-byte limit",
        None,
        "request_too_large",
    )


def serve(
    source: str | Path | None,
    config: str | None,
    overrides: list[str],
    settings: Settings,
    model_id: str | None = None,
) -> None:
    """Load the team `source` names (as `maporl discuss` does) and serve it until interrupted."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UsageError("maporl serve needs FastAPI and uvicorn: `pip install 'maporl[serve]'`") from None
    from maporl.api import load_team

    if settings.threads:
        import torch

        # The worker's OpenMP threads spin at every barrier: with one per core, the HTTP side (or anything else on
        # the machine) taking a core stalls each of them, and on 2 cores a discussion took 10 s instead of 0.2 s.
        torch.set_num_threads(settings.threads)
    cfg, generator = load_team(source, config, overrides)
    model_id = model_id or default_model_id(source)
    app = create_app(cfg, generator, model_id, settings)
    d = cfg.discussion
    print(
        f"maporl serve: {model_id} ({d.num_agents} agents x {d.turns} turns, {cfg.task.name}) on "
        f"http://{settings.host}:{settings.port}/v1 (POST /v1/chat/completions, GET /v1/models, GET /health)",
        flush=True,
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
