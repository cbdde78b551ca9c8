"""The embedding service of Hornbeam's docs (index, search, embed, stats) on FastAPI, where one
worker loads the model and serves it to the others as a hook.

Hornbeam's version loads a sentence-transformers model in every worker. Here the model is loaded
once per backend: at startup (and every second after) each worker tries to take the store key
``embedding:model_owner`` (``state_set_if_absent`` with a 3 s TTL, refreshed by its owner); the
worker that holds it registers the model as the hook ``embedding.model`` and every worker,
itself included, calls ``execute("embedding.model", "encode", text)``. When the owner dies, its
key expires and another worker takes over. Embeddings go through
``hornbeam_ml.cached_inference``, so a text is encoded once for all workers.

The model is a small deterministic stand-in (``model.py``: hashed words and trigrams, 64
dimensions; no download). Run with several workers sharing Redis::

    HORNBEAM_URL=redis://127.0.0.1:6379/0 uvicorn examples.embedding_service.app:app --workers 3

Endpoints: ``POST /index`` ``{"id", "text", "metadata"}``, ``DELETE /index/{id}``,
``POST /search`` ``{"query", "top_k": 10, "threshold": 0.5}``, ``POST /embed``
``{"texts": [...], "cache": true}``, ``GET /stats``, ``GET /health``. Every answer names the
worker that served it (``served_by``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Optional

import hornbeam_erlang as hb
from fastapi import FastAPI, HTTPException
from fastapi.responses import PlainTextResponse
from hornbeam_ml import cache_key_for, cache_stats, cached_inference
from pydantic import BaseModel

from .model import DIM, NAME, EmbeddingModel

MODEL_HOOK = "embedding.model"
OWNER_KEY = "embedding:model_owner"
OWNER_TTL = 3.0
CACHE_PREFIX = "emb"
DOC_PREFIX = "embedding:doc:"
MAX_BATCH_SIZE = 100

_log = logging.getLogger("embedding_service")


def keep_model() -> bool:
    """One election round: take or keep the model, or let it go. True when this worker serves it."""
    me = hb.node()
    mine = hb.state_set_if_absent(OWNER_KEY, me, OWNER_TTL) or hb.state_get(OWNER_KEY) == me
    if mine:
        hb.state_expire(OWNER_KEY, OWNER_TTL)
        if MODEL_HOOK not in _served:
            hb.register_hook(MODEL_HOOK, EmbeddingModel)
            _served.add(MODEL_HOOK)
            _log.info("embedding_service: %s loaded the model", me)
    elif MODEL_HOOK in _served:
        hb.unregister_hook(MODEL_HOOK)
        _served.discard(MODEL_HOOK)
    return mine


_served: set[str] = set()


async def _elect_forever() -> None:
    # Bounded by the app's life: cancelled at shutdown.
    while True:
        try:
            keep_model()
        except Exception as e:  # the backend may be briefly unreachable: try again next round
            _log.warning("embedding_service: model election failed: %s", e)
        await asyncio.sleep(OWNER_TTL / 3)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    keep_model()
    task = asyncio.create_task(_elect_forever())
    try:
        yield
    finally:
        task.cancel()
        if MODEL_HOOK in _served:
            hb.unregister_hook(MODEL_HOOK)
            _served.discard(MODEL_HOOK)
            if hb.state_get(OWNER_KEY) == hb.node():
                hb.state_delete(OWNER_KEY)


app = FastAPI(title="Embedding Service", lifespan=lifespan)


class EmbedRequest(BaseModel):
    texts: list[str]
    cache: bool = True


class IndexRequest(BaseModel):
    id: str
    text: str
    metadata: Optional[dict[str, Any]] = None


class SearchRequest(BaseModel):
    query: str
    top_k: int = 10
    threshold: float = 0.5


def _encode_remote(text: str) -> list[float]:
    try:
        return hb.execute(MODEL_HOOK, "encode", text)  # type: ignore[no-any-return]
    except hb.HookNotFound:
        raise HTTPException(status_code=503, detail="the model is not loaded yet") from None
    except hb.HookError as e:
        raise HTTPException(status_code=502, detail=f"the model failed: {e}") from None


def embed_text(text: str, cache: bool = True) -> list[float]:
    if not cache:
        return _encode_remote(text)
    return cached_inference(_encode_remote, text, cache_prefix=CACHE_PREFIX)


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


# Endpoints are plain functions: FastAPI runs them on its thread pool, where `execute` may wait.


@app.get("/", response_class=PlainTextResponse)
def index_page() -> str:
    return ("Embedding Service - POST /embed {\"texts\": [...]}, POST /index {\"id\", \"text\"}, "
            "POST /search {\"query\"}, GET /stats\n")


@app.post("/embed")
def embed(request: EmbedRequest) -> dict[str, Any]:
    if len(request.texts) > MAX_BATCH_SIZE:
        raise HTTPException(status_code=400, detail=f"Maximum batch size is {MAX_BATCH_SIZE}")
    hb.state_incr("embedding:metrics:embed_requests")
    hb.state_incr("embedding:metrics:embed_texts", len(request.texts))
    cached = sum(1 for t in request.texts if request.cache and hb.state_exists(cache_key_for(t, CACHE_PREFIX)))
    embeddings = [embed_text(t, request.cache) for t in request.texts]
    return {"embeddings": embeddings, "dimensions": len(embeddings[0]) if embeddings else 0,
            "cached_count": cached, "served_by": hb.node()}


@app.post("/index")
def index_document(request: IndexRequest) -> dict[str, Any]:
    hb.state_incr("embedding:metrics:index_requests")
    doc = {"id": request.id, "text": request.text, "embedding": embed_text(request.text),
           "metadata": request.metadata or {}}
    key = DOC_PREFIX + request.id
    new = not hb.state_exists(key)
    hb.state_set(key, doc)
    if new:
        hb.state_incr("embedding:index:doc_count")
    return {"indexed": request.id, "served_by": hb.node()}


@app.delete("/index/{doc_id}")
def delete_document(doc_id: str) -> dict[str, Any]:
    key = DOC_PREFIX + doc_id
    if not hb.state_exists(key):
        raise HTTPException(status_code=404, detail="Document not found")
    hb.state_delete(key)
    hb.state_decr("embedding:index:doc_count")
    return {"deleted": doc_id, "served_by": hb.node()}


@app.post("/search")
def search(request: SearchRequest) -> dict[str, Any]:
    hb.state_incr("embedding:metrics:search_requests")
    query = embed_text(request.query)
    keys = hb.state_keys(DOC_PREFIX)
    results = []
    for doc in hb.state_get_multi(keys).values():
        if not doc:
            continue
        score = _cosine(query, doc["embedding"])
        if score >= request.threshold:
            results.append({"id": doc["id"], "text": doc["text"], "score": score,
                            "metadata": doc.get("metadata")})
    results.sort(key=lambda r: r["score"], reverse=True)
    return {"results": results[: max(0, request.top_k)], "served_by": hb.node()}


@app.get("/stats")
def stats() -> dict[str, Any]:
    counters = hb.state_get_multi([
        "embedding:index:doc_count", "embedding:metrics:embed_requests",
        "embedding:metrics:search_requests", "embedding:metrics:index_requests",
    ])
    prefix = "embedding:encoded_by:"
    encoded = hb.state_get_multi(hb.state_keys(prefix))
    return {
        "model": {"name": NAME, "dimensions": DIM, "node": hb.state_get(OWNER_KEY)},
        "index": {"documents": counters["embedding:index:doc_count"] or 0},
        "requests": {
            "embed": counters["embedding:metrics:embed_requests"] or 0,
            "search": counters["embedding:metrics:search_requests"] or 0,
            "index": counters["embedding:metrics:index_requests"] or 0,
        },
        "cache": cache_stats(),
        "encoded_by": {k[len(prefix):]: v for k, v in encoded.items()},
        "nodes": sorted([hb.node(), *hb.nodes()]),
        "served_by": hb.node(),
    }


@app.get("/health")
def health() -> dict[str, Any]:
    try:
        model = hb.execute(MODEL_HOOK, "info")
    except hb.HookError:
        model = None
    return {"status": "healthy", "model_ready": model is not None,
            "model_node": model["node"] if model else None, "served_by": hb.node()}
