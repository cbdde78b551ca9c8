"""A small deterministic stand-in for a sentence-embedding model: no download, no numpy.

Each word and each of its character trigrams is hashed (SHA-256) into one of `DIM` buckets with a
sign; the vector is L2-normalised. Texts that share words or word pieces get a high cosine
similarity, so search behaves like a (very) small semantic model, and the same text always gives
the same vector in every process.
"""

from __future__ import annotations

import hashlib
import math
import re

import hornbeam_erlang as hb

NAME = "hashing-trigram-64"
DIM = 64
_WORD = re.compile(r"\w+")


def _features(text: str) -> list[tuple[str, float]]:
    feats: list[tuple[str, float]] = []
    for word in _WORD.findall(text.lower()):
        feats.append(("w:" + word, 1.0))
        padded = f"^{word}$"
        feats.extend(("t:" + padded[i:i + 3], 0.5) for i in range(len(padded) - 2))
    return feats


def encode(text: str) -> list[float]:
    vec = [0.0] * DIM
    for feat, weight in _features(text):
        digest = hashlib.sha256(feat.encode()).digest()
        index = int.from_bytes(digest[:4], "little") % DIM
        vec[index] += weight if digest[4] & 1 else -weight
    norm = math.sqrt(sum(v * v for v in vec))
    return [v / norm for v in vec] if norm else vec


class EmbeddingModel:
    """The hook handler: one instance per process that loads "the model"."""

    def __init__(self) -> None:
        self.name = NAME
        self.dim = DIM

    def encode(self, text: str) -> list[float]:
        # Which process computed what, for /stats and the tests.
        hb.state_incr(f"embedding:encoded_by:{hb.node()}")
        return encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[float]]:
        return [self.encode(t) for t in texts]

    def info(self) -> dict:
        return {"name": self.name, "dim": self.dim, "node": hb.node()}
