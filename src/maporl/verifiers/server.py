"""`maporl verifier serve`: the learned verifier over HTTP (FastAPI + uvicorn); the client is `client.HTTPVerifier`.

    POST /score  {"items": [{"question": "...", "response": "..."}, ...]}  ->  {"scores": [0.93, ...]}
    GET  /health ->  {"status": "ok", "model": "...", "max_items": 256}

Bad requests get a 4xx with a one-line `detail`: malformed JSON or fields (422), too many items or too long text or
body (413). Binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

from maporl.errors import UsageError


def serve(model_dir: str, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu") -> None:
    try:
        import uvicorn
    except ImportError:
        raise UsageError("the verifier server needs FastAPI and uvicorn: `pip install 'maporl[serve]'`") from None
    from maporl.verifiers import load_learned_verifier
    from maporl.verifiers.api import create_app

    app = create_app(load_learned_verifier(model_dir, device=device), model_dir)
    uvicorn.run(app, host=host, port=port, log_level="warning")
