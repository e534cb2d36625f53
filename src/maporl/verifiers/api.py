"""The verifier's HTTP API (FastAPI). No `from __future__ import annotations` here: FastAPI reads the request
model from the endpoint's real annotation. Imported only by `maporl verifier serve` and tests."""

import threading

MAX_ITEMS = 256
MAX_CHARS = 20_000
MAX_BODY_BYTES = MAX_ITEMS * 2 * MAX_CHARS + 65_536


def create_app(verifier, model_name: str = "verifier"):
    """A FastAPI app scoring with `verifier.probabilities(pairs)`; model calls are serialised (one CPU model)."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, Field

    class Item(BaseModel):
        question: str = Field(max_length=MAX_CHARS)
        response: str = Field(max_length=MAX_CHARS)

    class ScoreRequest(BaseModel):
        items: list[Item] = Field(min_length=1)

    app = FastAPI(title="maporl verifier", version="1")
    lock = threading.Lock()

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > MAX_BODY_BYTES:
            detail = f"request body of {size} bytes is over the {MAX_BODY_BYTES}-byte limit; send fewer items"
            return JSONResponse({"detail": detail}, status_code=413)
        return await call_next(request)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": model_name, "max_items": MAX_ITEMS, "max_chars": MAX_CHARS}

    @app.post("/score")
    def score(req: ScoreRequest) -> dict:
        if len(req.items) > MAX_ITEMS:
            raise HTTPException(413, f"{len(req.items)} items is over the limit of {MAX_ITEMS}; split the request")
        with lock:
            scores = verifier.probabilities([(it.question, it.response) for it in req.items])
        return {"scores": scores}

    return app
