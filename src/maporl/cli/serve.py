"""`maporl serve [SOURCE]`: a team behind an OpenAI-compatible HTTP API (serving/server.py, docs/serving.md)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from maporl.cli.args import overrides_from_args
from maporl.errors import UsageError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def add_parser(sub) -> None:
    from maporl.serving.protocol import Limits

    limits = Limits()
    s = sub.add_parser(
        "serve",
        help="serve a team over an OpenAI-compatible HTTP API (POST /v1/chat/completions, GET /v1/models)",
        description="The last user message of a chat request is the question; the team discusses it and the reply is "
        "its final answer (the majority of the last turn), with the whole discussion under `maporl`. Concurrent "
        "requests are discussed in one batch. Settings, limits and examples: docs/serving.md.",
    )
    s.add_argument(
        "source",
        nargs="?",
        help="a run directory (its latest checkpoint), a checkpoint, an export, or a Hugging Face model directory "
        "(default: the embedded base, untrained)",
    )
    s.add_argument("--config", help="YAML config or shipped recipe laid over the source's settings")
    s.add_argument("--num-agents", type=int, help="number of agents (discussion.num_agents; default: the run's)")
    s.add_argument("--turns", type=int, help="number of turns (discussion.turns; default: the run's)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument(
        "--api-key",
        default=os.environ.get("MAPORL_API_KEY"),
        help="require `Authorization: Bearer KEY` on /v1 (default: $MAPORL_API_KEY; none: no key needed)",
    )
    s.add_argument("--model-name", help="the model id clients send (default: the source folder's name)")
    s.add_argument("--max-batch", type=int, default=32, help="requests per discussion batch (default 32)")
    s.add_argument("--wait-ms", type=float, default=10.0, help="wait for more requests to batch, ms (default 10)")
    s.add_argument("--max-queue", type=int, default=256, help="waiting requests before 503 overloaded (default 256)")
    s.add_argument(
        "--threads",
        type=int,
        default=max(1, cores() - 1),
        help=f"torch CPU threads for generation (default: one core less than this machine's, {max(1, cores() - 1)}:"
        " one stays with the HTTP side)",
    )
    s.add_argument("--max-body-bytes", type=int, default=limits.max_body_bytes, help="largest request body")
    s.add_argument("--max-messages", type=int, default=limits.max_messages, help="most messages in a request")
    s.add_argument("--max-content-chars", type=int, default=limits.max_content_chars, help="longest message")
    s.add_argument("--max-tokens", type=int, default=limits.max_tokens, help="largest max_tokens a request may ask")
    s.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")


def run(args: argparse.Namespace) -> None:
    from maporl.serving.protocol import Limits
    from maporl.serving.server import Settings, serve

    source = args.source
    if source and "=" in source and not Path(source).exists():  # `maporl serve key=value`: no source, an override
        args.overrides, source = [source, *args.overrides], None
    names = ("port", "max_batch", "max_queue", "threads", "max_body_bytes", "max_messages", "max_content_chars")
    for name in (*names, "max_tokens"):
        value = getattr(args, name)
        if value < 1 or (name == "port" and value > 65535):
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1{' and <= 65535' if name == 'port' else ''}")
    if args.wait_ms < 0:
        raise UsageError("--wait-ms must be >= 0")
    if args.host not in LOOPBACK and not args.api_key:
        print(
            f"maporl serve: warning: listening on {args.host} with no API key; anyone who reaches it can use it "
            "(--api-key or MAPORL_API_KEY)"
        )
    limits = Limits(args.max_body_bytes, args.max_messages, args.max_content_chars, args.max_tokens)
    settings = Settings(
        host=args.host,
        port=args.port,
        api_key=args.api_key or None,
        max_batch=args.max_batch,
        wait_ms=args.wait_ms,
        max_queue=args.max_queue,
        threads=args.threads,
        limits=limits,
    )
    serve(source, args.config, overrides_from_args(args), settings, args.model_name)
