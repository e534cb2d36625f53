"""The client of `maporl verifier serve`: scores (B, N, T) over HTTP, with timeouts and retries."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

from maporl.errors import UsageError
from maporl.verifiers.api import MAX_CHARS, MAX_ITEMS
from maporl.verifiers.base import ProbabilityVerifier


class HTTPVerifier(ProbabilityVerifier):
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
