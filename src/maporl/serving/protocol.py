"""The OpenAI chat-completions protocol of `maporl serve`, without a web framework: request checks, the team's final
answer, and the reply, chunk and error bodies. Pure functions on dicts, so every rule is tested without a server.

What a request may hold and what of it is used is listed in docs/serving.md; anything this module refuses is an
`APIError` that the server turns into a 4xx in the OpenAI error shape.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # light at import: `maporl --help` builds the serve parser from `Limits`, without torch
    from maporl.records import Answer, Transcript

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
INT64 = 2**63  # seeds are hashed as text (discussion.sample_seed); the bound only keeps request ints ordinary


@dataclass(frozen=True)
class Limits:
    """What one request may hold (the `maporl serve` flags of the same names)."""

    max_body_bytes: int = 262_144
    max_messages: int = 64
    max_content_chars: int = 8_000
    max_tokens: int = 4_096  # the largest `max_tokens` accepted (every answer is generation.max_new_tokens at most)


class APIError(Exception):
    """A request the server refuses: HTTP status and the OpenAI error fields."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    @property
    def type(self) -> str:
        # OpenAI's own: every 4xx (a wrong key and an unknown model too) is an invalid_request_error; `code` tells.
        return "server_error" if self.status >= 500 else "invalid_request_error"

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ChatRequest:
    """What the team uses of a request."""

    question: str
    seed: int | None  # None: the server draws one (and returns it, so the reply can be asked for again)
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the token counts


def _text(content: object, param: str) -> str:
    """A message's text: a string, or a list of text parts; images and audio are refused (the agents read text)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(400, "only text content parts ({'type': 'text', 'text': ...}) are supported", param)
            texts.append(part["text"])
        return "".join(texts)
    raise APIError(400, "content must be a string or a list of text parts", param)


def _int(body: dict, key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise APIError(400, f"{key} must be an integer from {low} to {high}; got {value!r}", key)
    return value


def parse_chat_request(body: object, limits: Limits, model_id: str) -> ChatRequest:
    """The checked request, or an APIError naming the first field at fault."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, "model is required: a string (GET /v1/models lists it)", "model")
    if model != model_id:
        raise APIError(
            404, f"the model {model!r} does not exist; this server serves {model_id!r}", "model", "model_not_found"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages must be a non-empty list of {'role', 'content'} objects", "messages")
    if len(messages) > limits.max_messages:
        raise APIError(
            400,
            f"{len(messages)} messages is over the limit of {limits.max_messages}; send the "
            "question alone (the team answers the last user message)",
            "messages",
            "too_many_messages",
        )
    text = ""
    for k, message in enumerate(messages):
        param = f"messages[{k}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            role = message.get("role") if isinstance(message, dict) else None
            raise APIError(400, f"{param}.role must be one of {', '.join(ROLES)}; got {role!r}", f"{param}.role")
        text = _text(message.get("content"), f"{param}.content")
        if len(text) > limits.max_content_chars:
            raise APIError(
                400,
                f"{param}.content has {len(text)} characters, over the limit of {limits.max_content_chars}",
                f"{param}.content",
                "content_too_long",
            )
    last = len(messages) - 1
    if messages[last]["role"] != "user":
        raise APIError(
            400,
            f"the last message must be the user's question (role user); got role {messages[last]['role']!r}",
            f"messages[{last}].role",
        )
    if not text.strip():
        raise APIError(400, "the question (the last user message) is empty", f"messages[{last}].content")
    for key in ("max_tokens", "max_completion_tokens"):
        _int(body, key, 1, limits.max_tokens)
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise APIError(400, f"n must be 1 (one reply: the team's answer); got {n!r}", "n")
    if body.get("tools") or body.get("functions"):
        raise APIError(400, "tools are not supported: the team answers the question itself", "tools")
    if body.get("logprobs"):
        raise APIError(400, "logprobs are not returned by this server", "logprobs")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise APIError(400, f"stream must be true or false; got {stream!r}", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise APIError(400, "stream_options must be an object", "stream_options")
    include_usage = bool(options and options.get("include_usage"))
    return ChatRequest(text.strip(), _int(body, "seed", -INT64, INT64 - 1), bool(stream), include_usage)


@dataclass(frozen=True)
class FinalAnswer:
    content: str  # the reply's message content
    answer: str | None  # the majority of the final turn's parsed answers (None: nobody gave one)
    votes: int  # how many agents gave it at the final turn
    finish_reason: str  # "stop", or "length" when the reply is an answer cut off at generation.max_new_tokens


def final_answer(transcript: Transcript) -> FinalAnswer:
    """The team's answer: the majority of the final turn's parsed answers, ties to the lowest-numbered agent (as
    `maporl eval` counts a majority). When no agent gave a parseable answer, the first agent's final response stands
    in, so the reply is never empty and still shows what the team said."""
    from maporl.evaluation import majority

    last = transcript.answers[-1]
    answer = majority([a.parsed for a in last])
    if answer is not None:
        return FinalAnswer(answer, answer, sum(a.parsed == answer for a in last), "stop")
    first = last[0]
    content = first.response.strip() or "(the team gave no answer)"
    return FinalAnswer(content, None, 0, "length" if first.truncated else "stop")


def answer_json(agent: int, response: str, parsed: str | None, truncated: bool) -> dict:
    return {"agent": agent, "response": response, "parsed": parsed, "truncated": truncated}


def turn_json(turn: tuple[Answer, ...]) -> list[dict]:
    return [answer_json(a.agent, a.response, a.parsed, a.truncated) for a in turn]


def usage_json(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def new_id() -> tuple[str, int]:
    """A reply's id and creation time."""
    return f"chatcmpl-{uuid.uuid4().hex}", int(time.time())


def completion_body(rid: str, created: int, model: str, transcript: Transcript, seed: int, usage: dict) -> dict:
    """The non-streamed reply: the team's final answer as the message, the whole discussion under `maporl`."""
    final = final_answer(transcript)
    message = {"role": "assistant", "content": final.content}
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": final.finish_reason, "logprobs": None}],
        "usage": usage,
        "maporl": {
            "answer": final.answer,
            "votes": final.votes,
            "seed": seed,
            "weights_version": transcript.meta.get("weights_version"),
            "turns": [turn_json(turn) for turn in transcript.answers],
        },
    }


def chunk_body(rid: str, created: int, model: str, delta: dict, finish_reason: str | None = None, **extra) -> dict:
    """One streamed chunk (`chat.completion.chunk`); `extra` adds top-level fields (`maporl`, `usage`)."""
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [choice],
        **extra,
    }
