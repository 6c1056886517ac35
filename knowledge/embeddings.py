"""Embeddings, where an agent names an `embedding_model` its OpenAI-compatible provider serves at
`/v1/embeddings` (README "The agent's knowledge"): passages are embedded when a document is written, in
batches; a question once per message, within a few seconds of the agent's deadline. Any failure is logged
and the knowledge falls back to full-text search alone: never an error for the integrator.

The vectors are stored normalised (length 1) as `double precision[]` (`Passage.embedding`), so a dot
product is their cosine similarity. PostgreSQL 15 without pgvector has no vector index: the similarity is
computed in SQL over a bounded set of passages (knowledge/retrieval.py)."""

import math
import time
from collections.abc import Callable
from typing import Any

import structlog

from config.errors import ApplicationError
from conversations.agents.base import AgentConfig, get_backend

logger = structlog.get_logger(__name__)

BATCH = 64  # texts per /embeddings call at ingestion
INGEST_SECONDS = 60.0  # all of one document's batches
QUERY_SECONDS = 5.0  # at most, and never more than a third of the agent's timeout_seconds


def _embedder(agent: AgentConfig) -> Callable[..., list[list[float]]] | None:
    if not agent.embedding_model:
        return None
    try:
        backend: Any = get_backend(agent.provider)
    except ApplicationError:
        return None
    return getattr(backend, "embed", None)


def _normalised(vector: list[float]) -> list[float] | None:
    norm = math.sqrt(sum(value * value for value in vector))
    if not norm or not math.isfinite(norm):
        return None
    return [value / norm for value in vector]


def passages_embed(*, agent: AgentConfig, texts: list[str]) -> list[list[float] | None] | None:
    """The vectors of a document's passages, or None (no embedding model, or the provider failed)."""
    embed = _embedder(agent)
    if embed is None or not texts:
        return None
    deadline = time.monotonic() + INGEST_SECONDS
    vectors: list[list[float]] = []
    try:
        for start in range(0, len(texts), BATCH):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"embedding took over {INGEST_SECONDS:g} s")
            vectors.extend(embed(agent=agent, texts=texts[start : start + BATCH], timeout=remaining))
    except Exception as error:
        logger.warning("passages not embedded: full-text search only", agent_id=agent.id, error=repr(error)[:300])
        return None
    return [_normalised(vector) for vector in vectors]


def query_embed(*, agent: AgentConfig, text: str) -> list[float] | None:
    """The question's vector, or None (no embedding model, or the provider failed in time)."""
    embed = _embedder(agent)
    if embed is None or not text.strip():
        return None
    timeout = min(QUERY_SECONDS, agent.timeout_seconds / 3)
    try:
        (vector,) = embed(agent=agent, texts=[text], timeout=timeout)
    except Exception as error:
        logger.warning("question not embedded: full-text search only", agent_id=agent.id, error=repr(error)[:300])
        return None
    return _normalised(vector)


def vector_literal(vector: list[float] | None) -> str:
    """A vector as PostgreSQL's array text, "" for none (NULL after NULLIF)."""
    return "{" + ",".join(f"{value:.7g}" for value in vector) + "}" if vector else ""
