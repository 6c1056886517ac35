"""The passages of an agent's documents that best match the conversation's latest messages (README "The
agent's knowledge"; docs/architecture.md, "The agent's knowledge"). One statement, in the think phase:

1. The question's lexemes in the agent's language (`to_tsvector`: stems, no stop words), each with the
   number of the agent's passages that hold it (`knowledge_term`).
2. Candidates: the passages holding any of the rarest of them (an OR query: `websearch_to_tsquery` ANDs the
   words, and a question rarely has all its words in the answer), the best CANDIDATES by `ts_rank`; and
   the passages holding one of the question's exact codes (a word with a digit: order numbers, SKUs).
3. Those ranked by BM25 (each lexeme's inverse document frequency, its count in the passage, headings and
   title counting three times, the passage's length); a passage with an exact code first.

The rarest lexemes bound the candidates: a common word ("order" in a shop's FAQ) alone would make every
passage a candidate, and the cost of a message would grow with the documents."""

import math
import re
from dataclasses import dataclass

from django.db import connection

from conversations.agents.base import AgentConfig, HistoryItem, KnowledgePassage
from knowledge.chunking import codes_of
from knowledge.models import Document, Passage, Term

QUERY_MAX_CHARS = 1000  # of the latest messages' text: a question, not a document
QUERY_MESSAGES = 2  # the contact's latest messages: "and for Portugal?" needs the one before
PROBE_TERMS = 8  # the rarest lexemes that choose the candidates
CANDIDATES = 64
CODES_MAX = 8
_K1, _B = 1.2, 0.75
AVERAGE_LEXEMES = 100.0  # a passage's usual length in lexemes (knowledge/chunking.py packs about 200 words)

_SQL = f"""
WITH q AS (
    SELECT DISTINCT lexeme FROM unnest(tsvector_to_array(to_tsvector(%(lang)s::regconfig, %(text)s))) AS lexeme
), terms AS (
    SELECT t.lexeme, t.passages,
           ln(1 + (%(total)s - t.passages + 0.5) / (t.passages + 0.5)) AS idf
    FROM q JOIN {Term._meta.db_table} t ON t.agent_id = %(agent)s AND t.lexeme = q.lexeme
), probe AS (
    SELECT string_agg('''' || replace(replace(lexeme, '\\', '\\\\'), '''', '''''') || '''', ' | ')::tsquery AS query
    FROM (SELECT lexeme FROM terms ORDER BY passages, lexeme LIMIT {PROBE_TERMS}) rare
), candidates AS (
    (SELECT p.id FROM {Passage._meta.db_table} p, probe
     WHERE probe.query IS NOT NULL AND p.agent_id = %(agent)s AND p.search @@ probe.query
     ORDER BY ts_rank(p.search, probe.query, 1) DESC LIMIT {CANDIDATES})
    UNION
    (SELECT p.id FROM {Passage._meta.db_table} p
     WHERE cardinality(%(codes)s::varchar[]) > 0 AND p.agent_id = %(agent)s AND p.codes && %(codes)s::varchar[]
     LIMIT {CANDIDATES})
)
SELECT d.key, d.title, d.url, p.heading, p.text,
       cardinality(ARRAY(SELECT unnest(p.codes) INTERSECT SELECT unnest(%(codes)s::varchar[]))) AS exact,
       coalesce((
           SELECT sum(terms.idf * tf * {_K1 + 1} / (tf + {_K1} * ({1 - _B} + {_B} * p.lexemes / {AVERAGE_LEXEMES})))
           FROM (
               SELECT u.lexeme, cardinality(u.positions) + 2 * cardinality(array_positions(u.weights, 'A')) AS tf
               FROM unnest(p.search) u
           ) v JOIN terms ON terms.lexeme = v.lexeme
       ), 0) AS score
FROM candidates c
JOIN {Passage._meta.db_table} p ON p.id = c.id
JOIN {Document._meta.db_table} d ON d.id = p.document_id
ORDER BY exact DESC, score DESC, p.id
LIMIT %(limit)s
"""
_WORD = re.compile(r"\w")


@dataclass(frozen=True)
class Ranked:
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
    with connection.cursor() as cursor:
        cursor.execute(
            _SQL,
            {
                "agent": agent.id,
                "lang": agent.knowledge_language,
                "text": query,
                "total": max(agent.knowledge_passages, 1),
                "codes": codes_of(query)[:CODES_MAX],
                "limit": limit,
            },
        )
        rows = cursor.fetchall()
    return [
        Ranked(
            passage=KnowledgePassage(document_id=key, title=title, url=url or None, heading=heading, text=text),
            exact=exact,
            score=float(score),
        )
        for key, title, url, heading, text, exact, score in rows
    ]


def knowledge_select(*, agent: AgentConfig, history: list[HistoryItem]) -> tuple[KnowledgePassage, ...]:
    """The passages given to the agent for this message: the best ones, at most `knowledge_max_passages`,
    their text within `knowledge_max_chars` (the best one always, cut to fit)."""
    ranked = passages_rank(agent=agent, query=query_text(history), limit=agent.knowledge_max_passages)
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
