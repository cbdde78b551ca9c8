"""The embedding service under ``uvicorn --workers 3`` sharing a private Redis or a ``local://``
directory: one worker loads the model and serves it as a hook, the others call it; index, search,
embed and stats agree whichever worker answers; when the model's worker is killed another takes
the model over."""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Iterator

import httpx
import pytest

from conftest import Server
from test_chat_redis import RedisServer

APP = "examples.embedding_service.app:app"


@pytest.fixture(params=["redis", "local"])
def backend_url(request, tmp_path) -> Iterator[str]:
    """What the workers share: a private redis-server, or a `local://` directory."""
    if request.param == "local":
        yield f"local://{tmp_path}"
        return
    request.getfixturevalue("redis_server")  # fails with an install hint when missing
    server = RedisServer()
    server.start()
    yield server.url
    server.stop()


def fresh(url: str, method: str, path: str, **kw: Any) -> httpx.Response:
    """One request on a new connection, so that requests spread over the workers."""
    with httpx.Client(base_url=url, timeout=30) as c:
        return c.request(method, path, **kw)


def wait_model(url: str) -> str:
    for _ in range(300):  # bounded: until a worker serves the model
        r = fresh(url, "GET", "/health")
        if r.status_code == 200 and r.json()["model_ready"]:
            return r.json()["model_node"]
        time.sleep(0.05)
    raise AssertionError("no worker loaded the model")


DOCS = {
    "1": "Python is a programming language",
    "2": "Erlang is great for concurrent systems",
    "3": "Machine learning uses neural networks",
}


def test_three_workers_share_one_model(serve, backend_url):
    server: Server = serve(APP, env={"HORNBEAM_URL": backend_url}, args=("--workers", "3"))
    owner = wait_model(server.url)

    for doc_id, text in DOCS.items():
        r = fresh(server.url, "POST", "/index", json={"id": doc_id, "text": text, "metadata": {"n": doc_id}})
        assert r.status_code == 200 and r.json()["indexed"] == doc_id

    r = fresh(server.url, "POST", "/search", json={"query": "programming languages", "top_k": 2, "threshold": 0.0})
    results = r.json()["results"]
    assert [x["id"] for x in results][0] == "1" and len(results) == 2
    assert results[0]["score"] > results[1]["score"]
    assert results[0]["metadata"] == {"n": "1"}

    # Many requests over new connections: several workers answer, one computes.
    served_by = set()
    vectors = {}
    for i in range(300):  # bounded: until all three workers have answered
        r = fresh(server.url, "POST", "/embed", json={"texts": [f"text {i % 7}", "hello world"]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["dimensions"] == 64
        served_by.add(body["served_by"])
        for text, vec in zip([f"text {i % 7}", "hello world"], body["embeddings"]):
            assert vectors.setdefault(text, vec) == vec  # the same vector from every worker
        if len(served_by) == 3 and i >= 20:
            break
    assert len(served_by) == 3

    stats = fresh(server.url, "GET", "/stats").json()
    assert len(stats["nodes"]) == 3 and set(stats["nodes"]) == served_by
    assert stats["model"]["node"] == owner
    # Only the model's worker encoded anything, though every worker embedded texts.
    assert list(stats["encoded_by"]) == [owner]
    # 3 documents, 1 query, 8 distinct texts: each encoded once, then read from the cache.
    assert stats["encoded_by"][owner] == 3 + 1 + 8
    assert stats["cache"]["misses"] == 12 and stats["cache"]["hits"] > 0
    assert stats["index"]["documents"] == 3

    r = fresh(server.url, "DELETE", "/index/2")
    assert r.status_code == 200
    assert fresh(server.url, "DELETE", "/index/2").status_code == 404
    assert fresh(server.url, "GET", "/stats").json()["index"]["documents"] == 2


def test_another_worker_takes_the_model_over_when_its_worker_dies(serve, backend_url):
    server: Server = serve(APP, env={"HORNBEAM_URL": backend_url}, args=("--workers", "3"))
    owner = wait_model(server.url)
    pid = int(owner.split("@")[0].rsplit("-", 1)[1])
    os.kill(pid, signal.SIGKILL)
    new_owner = None
    for i in range(600):  # bounded: until a surviving worker serves the model
        r = fresh(server.url, "POST", "/embed", json={"texts": [f"after {i}"], "cache": False})
        if r.status_code == 200:
            new_owner = fresh(server.url, "GET", "/stats").json()["model"]["node"]
            if new_owner != owner:
                break
        else:
            assert r.status_code in (502, 503), r.text  # the model is being taken over
        time.sleep(0.05)
    assert new_owner is not None and new_owner != owner
