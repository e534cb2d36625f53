"""`maporl verifier serve`: the learned verifier over HTTP (FastAPI + uvicorn), and its client.

    POST /score  {"items": [{"question": "...", "response": "..."}, ...]}  ->  {"scores": [0.93, ...]}
    GET  /health ->  {"status": "ok", "model": "...", "max_items": 256}

Bad requests get a 4xx with a one-line `detail`: malformed JSON or fields (422), too many items or too long text or
body (413). Binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

import torch

from maporl.errors import UsageError
from maporl.verifiers.api import MAX_CHARS, MAX_ITEMS


def serve(model_dir: str, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu") -> None:
    try:
        import uvicorn
    except ImportError:
        raise UsageError("the verifier server needs FastAPI and uvicorn: `pip install 'maporl[serve]'`") from None
    from maporl.verifiers.api import create_app
    from maporl.verifiers.model import load_model_verifier

    uvicorn.run(
        create_app(load_model_verifier(model_dir, device=device), model_dir), host=host, port=port, log_level="warning"
    )


class HTTPVerifier:
    """Client: scores (B, N, T) from a running `maporl verifier serve`, with timeouts and retries."""

    def __init__(self, url: str, task=None, timeout: float = 30.0, retries: int = 3, backoff: float = 0.5):
        self.url, self.task = url.rstrip("/"), task
        self.timeout, self.retries, self.backoff = timeout, retries, backoff

    def _post(self, payload: dict) -> dict:
        data = json.dumps(payload).encode()
        last = ""
        for attempt in range(self.retries):
            req = urllib.request.Request(f"{self.url}/score", data, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as e:
                if 400 <= e.code < 500:  # our request is wrong: retrying will not help
                    detail = json.loads(e.read() or b"{}").get("detail", "")
                    raise UsageError(f"verifier server rejected the request ({e.code}): {str(detail)[:200]}") from None
                last = f"HTTP {e.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                last = type(getattr(e, "reason", e)).__name__
            time.sleep(self.backoff * 2**attempt)
        raise UsageError(
            f"verifier server at {self.url} is unreachable after {self.retries} tries ({last}); "
            "start it with `maporl verifier serve --model DIR` or fix verifier.url"
        )

    def probabilities(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(pairs), MAX_ITEMS):
            items = [
                {"question": q[-MAX_CHARS:], "response": r[-MAX_CHARS:]} for q, r in pairs[start : start + MAX_ITEMS]
            ]
            out += self._post({"items": items})["scores"]
        return out

    def score(self, transcripts) -> torch.Tensor:
        from maporl.verifiers import score_transcripts

        return score_transcripts(transcripts, self.task, self.probabilities)
