"""The passages of an agent's documents that best match the conversation's latest messages (README "The
agent's knowledge"; docs/architecture.md, "The agent's knowledge"). Two statements, in the think phase:

1. The question's lexemes in the agent's language (`to_tsvector`: stems, no stop words), each with the
   number of the agent's passages that hold it (`knowledge_term`).
2. (a second statement, with the lexemes' weights and the probe written into it, so that the planner sees
   them) Candidates: the passages holding any of the rarest of them (an OR query: `websearch_to_tsquery` ANDs the
   words, and a question rarely has all its words in the answer), at most MATCHES_MAX of them, the best
   CANDIDATES of those by `ts_rank`; and
   the passages holding one of the question's exact codes (a word with a digit: order numbers, SKUs).
3. Those ranked by BM25 (each lexeme's inverse document frequency, its count in the passage, headings and
   title counting three times, the passage's length); a passage with an exact code first.

The rarest lexemes bound the candidates: a common word ("order" in a shop's FAQ) alone would make every
passage a candidate, and the cost of a message would grow with the documents."""

import math
import re
from dataclasses import dataclass

from django.db import connection

from config.db import connection_release
from conversations.agents.base import AgentConfig, HistoryItem, KnowledgePassage
from knowledge.chunking import codes_of
from knowledge.embeddings import query_embed, vector_literal
from knowledge.models import Document, Passage, Term

QUERY_MAX_CHARS = 1000  # of the latest messages' text: a question, not a document
QUERY_MESSAGES = 2  # the contact's latest messages: "and for Portugal?" needs the one before
PROBE_TERMS = 8  # the rarest lexemes that choose the candidates
PROBE_POSTINGS = 2000  # ... as long as the passages holding them add up to no more than this
CANDIDATES = 64
# The most matches of the rarest lexemes that are ranked: the bound on a message's cost when even the
# rarest words of the question are in thousands of passages (then the candidates are a sample of those).
MATCHES_MAX = 400
CODES_MAX = 8
_K1, _B = 1.2, 0.75
AVERAGE_LEXEMES = 100.0  # a passage's usual length in lexemes (knowledge/chunking.py packs about 200 words)

_TERMS_SQL = f"""
SELECT t.lexeme, t.passages
FROM unnest(tsvector_to_array(to_tsvector(%(lang)s::regconfig, %(text)s))) AS q(lexeme)
JOIN {Term._meta.db_table} t ON t.agent_id = %(agent)s AND t.lexeme = q.lexeme
"""
# The probe's tsquery and the codes are literals in the statement (client-side binding): the planner sees
# them, and picks the GIN index for rare words.
_RANK_SQL = f"""
WITH candidates AS (
    (SELECT m.id FROM (
         SELECT p.id, p.search FROM {Passage._meta.db_table} p
         WHERE %(probe)s::text <> '' AND p.agent_id = %(agent)s AND p.search @@ %(probe)s::tsquery
         LIMIT {MATCHES_MAX}
     ) m
     ORDER BY ts_rank(m.search, %(probe)s::tsquery, 1) DESC LIMIT {CANDIDATES})
    UNION
    (SELECT p.id FROM {Passage._meta.db_table} p
     WHERE cardinality(%(codes)s::varchar[]) > 0 AND p.agent_id = %(agent)s AND p.codes && %(codes)s::varchar[]
     LIMIT {CANDIDATES})
)
SELECT p.id, d.key, d.title, d.url, p.heading, p.text,
       cardinality(ARRAY(SELECT unnest(p.codes) INTERSECT SELECT unnest(%(codes)s::varchar[]))) AS exact,
       coalesce((
           SELECT sum(w.idf * v.tf * {_K1 + 1} / (v.tf + {_K1} * ({1 - _B} + {_B} * p.lexemes / {AVERAGE_LEXEMES})))
           FROM (
               SELECT u.lexeme, cardinality(u.positions) + 2 * cardinality(array_positions(u.weights, 'A')) AS tf
               FROM unnest(p.search) u
           ) v JOIN unnest(%(lexemes)s::text[], %(idfs)s::float8[]) AS w(lexeme, idf) ON w.lexeme = v.lexeme
       ), 0) AS score
FROM candidates c
JOIN {Passage._meta.db_table} p ON p.id = c.id
JOIN {Document._meta.db_table} d ON d.id = p.document_id
ORDER BY exact DESC, score DESC, p.id
LIMIT %(limit)s
"""
# The passages most similar to the question's embedding: all of the agent's up to VECTOR_SCAN_MAX passages
# (PostgreSQL 15 without pgvector has no vector index: a dot product per passage in SQL), beyond that only
# the full-text candidates (knowledge/embeddings.py).
VECTOR_SCAN_MAX = 5000
_VECTOR_SQL = f"""
SELECT p.id, d.key, d.title, d.url, p.heading, p.text, 0 AS exact,
       (SELECT sum(a * b) FROM unnest(p.embedding, %(vector)s::float8[]) AS t(a, b)) AS score
FROM {Passage._meta.db_table} p JOIN {Document._meta.db_table} d ON d.id = p.document_id
WHERE p.agent_id = %(agent)s AND p.embedding IS NOT NULL AND (%(all)s OR p.id = ANY(%(ids)s::bigint[]))
ORDER BY score DESC NULLS LAST, p.id
LIMIT %(limit)s
"""
RRF_K = 60  # reciprocal rank fusion: 1 / (RRF_K + rank) from each ranking
FUSION_DEPTH = 20  # passages of each ranking that take part
_WORD = re.compile(r"\w")


@dataclass(frozen=True)
class Ranked:
    id: int
    passage: KnowledgePassage
    exact: int
    score: float


def query_text(history: list[HistoryItem]) -> str:
    """The contact's latest messages' text (bodies and captions), newest first, at most QUERY_MAX_CHARS."""
    texts = []
    for item in reversed(history):
        if item.role != "user":
            continue
        body = item.content.get(item.type.lower(), {}) if isinstance(item.content, dict) else {}
        text = body.get("body") or body.get("caption") or "" if isinstance(body, dict) else ""
        if isinstance(text, str) and text.strip():
            texts.append(text.strip())
        if len(texts) == QUERY_MESSAGES:
            break
    return "\n".join(texts)[:QUERY_MAX_CHARS]


def passages_rank(*, agent: AgentConfig, query: str, limit: int) -> list[Ranked]:
    """At most `limit` of the agent's passages for `query`, best first (the module's docstring)."""
    if not _WORD.search(query) or limit <= 0:
        return []
    codes = codes_of(query)[:CODES_MAX]
    with connection.cursor() as cursor:
        cursor.execute(_TERMS_SQL, {"agent": agent.id, "lang": agent.knowledge_language, "text": query})
        terms = sorted(cursor.fetchall(), key=lambda term: (term[1], term[0]))
        if not terms and not codes:
            return []
        total = max(agent.knowledge_passages, 1)
        idfs = [math.log(1 + (total - passages + 0.5) / (passages + 0.5)) for _, passages in terms]
        cursor.execute(
            _RANK_SQL,
            {
                "agent": agent.id,
                "probe": " | ".join(_quoted(lexeme) for lexeme in _probe(terms)),
                "codes": codes,
                "lexemes": [lexeme for lexeme, _ in terms],
                "idfs": idfs,
                "limit": limit,
            },
        )
        rows = cursor.fetchall()
    return _rows(rows)


def _probe(terms: list[tuple[str, int]]) -> list[str]:
    """The lexemes that choose the candidates: the rarest first, while their passages add up to at most
    PROBE_POSTINGS (the GIN index's work), and at least the rarest two."""
    chosen: list[str] = []
    postings = 0
    for lexeme, passages in terms[:PROBE_TERMS]:
        postings += passages
        if len(chosen) >= 2 and postings > PROBE_POSTINGS:
            break
        chosen.append(lexeme)
    return chosen


def _quoted(lexeme: str) -> str:
    """A lexeme as a tsquery operand, taken as it is (no normalisation again)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _rows(rows: list[tuple]) -> list[Ranked]:
    return [
        Ranked(
            id=passage_id,
            passage=KnowledgePassage(document_id=key, title=title, url=url or None, heading=heading, text=text),
            exact=exact,
            score=float(score or 0),
        )
        for passage_id, key, title, url, heading, text, exact, score in rows
    ]


def passages_similar(*, agent: AgentConfig, vector: list[float], among: list[int], limit: int) -> list[Ranked]:
    """The passages whose embeddings are closest to `vector`: any of the agent's when it has at most
    VECTOR_SCAN_MAX passages, else only those of `among` (the full-text candidates)."""
    with connection.cursor() as cursor:
        cursor.execute(
            _VECTOR_SQL,
            {
                "agent": agent.id,
                "vector": vector_literal(vector),
                "all": agent.knowledge_passages <= VECTOR_SCAN_MAX,
                "ids": among,
                "limit": limit,
            },
        )
        return _rows(cursor.fetchall())


def passages_fuse(full_text: list[Ranked], similar: list[Ranked], *, limit: int) -> list[Ranked]:
    """Reciprocal rank fusion of the two rankings; a passage with an exact code of the question first, and
    on a tie the one full-text search found (its words are in the passage)."""
    scores: dict[int, float] = {}
    found: dict[int, Ranked] = {}
    for ranking in (full_text, similar):
        for rank, item in enumerate(ranking):
            scores[item.id] = scores.get(item.id, 0.0) + 1.0 / (RRF_K + rank + 1)
            found.setdefault(item.id, item)
    words = {item.id for item in full_text}
    order = sorted(scores, key=lambda pid: (-found[pid].exact, -scores[pid], pid not in words, pid))
    return [found[pid] for pid in order[:limit]]


def knowledge_select(*, agent: AgentConfig, history: list[HistoryItem]) -> tuple[KnowledgePassage, ...]:
    """The passages given to the agent for this message: the best ones, at most `knowledge_max_passages`,
    their text within `knowledge_max_chars` (the best one always, cut to fit)."""
    query = query_text(history)
    limit = agent.knowledge_max_passages
    vector = None
    if agent.embedding_model and limit > 0:
        connection_release()  # no connection held while the provider embeds the question
        vector = query_embed(agent=agent, text=query)
    if vector is None:
        ranked = passages_rank(agent=agent, query=query, limit=limit)
    else:
        full_text = passages_rank(agent=agent, query=query, limit=max(limit, FUSION_DEPTH))
        similar = passages_similar(
            agent=agent, vector=vector, among=[item.id for item in full_text], limit=max(limit, FUSION_DEPTH)
        )
        ranked = passages_fuse(full_text, similar, limit=limit)
    chosen: list[KnowledgePassage] = []
    budget = agent.knowledge_max_chars
    for item in ranked:
        if not math.isfinite(item.score):
            continue
        size = len(item.passage.text)
        if size > budget:
            if chosen or budget <= 0:
                break
            chosen.append(KnowledgePassage(**{**item.passage.__dict__, "text": item.passage.text[:budget]}))
            break
        chosen.append(item.passage)
        budget -= size
    return tuple(chosen)


def knowledge_sources(passages: tuple[KnowledgePassage, ...]) -> list[dict[str, str | None]]:
    """The 200 body's `sources`: each document whose passages the agent was given, once, best first."""
    seen: dict[str, dict[str, str | None]] = {}
    for passage in passages:
        seen.setdefault(
            passage.document_id, {"documentId": passage.document_id, "title": passage.title, "url": passage.url}
        )
    return list(seen.values())
