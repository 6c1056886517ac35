"""Writing an agent's documents (README "The agent's knowledge"): text indexed before the answer, a URL
fetched in the background, a delete. Each write is one transaction that first locks the agent's row, so the
writes of one agent run one at a time: two PUTs of one document give one winner whose passages are all
there, never a mix; the agent's counters (`AIAgent.knowledge_documents` / `knowledge_passages`, which the
messages endpoint reads with the agent) and its terms always match its passages. A message reads the
passages with one statement (knowledge/retrieval.py, after the words' weights): it sees a document wholly
before or wholly after a write, and a delete from the next message on."""

import hashlib
import json
import re
import threading
import uuid
from typing import Any

import psycopg.errors
import structlog
from celery import current_app
from django.conf import settings
from django.db import DatabaseError, connection, connections, transaction
from django.db.models import F
from django.utils import timezone

from channels_app.models import AIAgent
from config.db import connection_release
from config.errors import ApplicationError, InvalidRequest
from config.text import text_storable
from conversations.media.download import media_download
from conversations.media.extract import pdf_text_extract
from conversations.media.inspect import content_type_charset, media_sniff, text_clean, text_decode
from conversations.selectors import agent_config
from knowledge.chunking import Chunk, chunks_split, codes_of
from knowledge.embeddings import passages_embed, vector_literal
from knowledge.errors import (
    AgentNotFound,
    DocumentEmpty,
    DocumentNotFound,
    DocumentTooLarge,
    DocumentTypeUnsupported,
    IndexingTimeout,
    KnowledgeFull,
)
from knowledge.html_text import html_text
from knowledge.models import Document, Passage, Term

logger = structlog.get_logger(__name__)

DOCUMENT_KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}")
PDF_MAX_PAGES = 2000  # the extractor's CPU, memory and time limits stop a bomb long before
_HTML_TYPES = ("text/html", "application/xhtml+xml")

_PASSAGE, _TERM, _DOCUMENT = Passage._meta.db_table, Term._meta.db_table, Document._meta.db_table
# A passage's search vector: the document's title and the passage's headings weigh most (A), then its text.
_SEARCH = "setweight(to_tsvector({lang}, {title} || ' ' || {heading}), 'A') || to_tsvector({lang}, {text})"
_INSERT_PASSAGES = f"""
INSERT INTO {_PASSAGE} (document_id, agent_id, position, heading, text, codes, search, lexemes, embedding)
SELECT %(document)s, %(agent)s, u.position, u.heading, u.text, string_to_array(u.codes, ' '), v.search,
       length(v.search), NULLIF(u.embedding, '')::float8[]
FROM unnest(%(positions)s::int[], %(headings)s::text[], %(texts)s::text[], %(codes)s::text[], %(embeddings)s::text[])
     AS u(position, heading, text, codes, embedding)
CROSS JOIN LATERAL (
    SELECT {_SEARCH.format(lang="%(lang)s::regconfig", title="%(title)s", heading="u.heading", text="u.text")}
    AS search
) v
"""
# The passages each lexeme of a document's passages appears in: added to the agent's terms, or taken off.
_DOCUMENT_LEXEMES = f"""
SELECT lexeme, count(*) AS passages
FROM {_PASSAGE} p CROSS JOIN LATERAL unnest(tsvector_to_array(p.search)) AS lexeme
WHERE p.document_id = %(document)s GROUP BY lexeme
"""
_TERMS_ADD = f"""
INSERT INTO {_TERM} (agent_id, lexeme, passages)
SELECT %(agent)s, lexeme, passages FROM ({_DOCUMENT_LEXEMES}) d ORDER BY lexeme
ON CONFLICT (agent_id, lexeme) DO UPDATE SET passages = {_TERM}.passages + EXCLUDED.passages
"""
_TERMS_TAKE = f"""
WITH d AS ({_DOCUMENT_LEXEMES}),
gone AS (
    DELETE FROM {_TERM} t USING d WHERE t.agent_id = %(agent)s AND t.lexeme = d.lexeme AND t.passages <= d.passages
)
UPDATE {_TERM} t SET passages = t.passages - d.passages FROM d
WHERE t.agent_id = %(agent)s AND t.lexeme = d.lexeme AND t.passages > d.passages
"""


def agent_for_workspace(*, workspace_id: str, agent_id: str) -> AIAgent:
    """The workspace's agent; another workspace's (or no) agent is "not found", never "forbidden"."""
    agent = AIAgent.objects.filter(pk=agent_id, workspace_id=workspace_id).first() if text_storable(agent_id) else None
    if agent is None:
        raise AgentNotFound(
            "No AI agent with this id exists in your workspace. Check the agentId in the URL (GET "
            "/api/v1/agents lists them) and that the API key belongs to the agent's workspace.",
            details={"agentId": agent_id},
        )
    return agent


def document_key_check(key: str) -> None:
    if not DOCUMENT_KEY.fullmatch(key):
        raise InvalidRequest(
            "The documentId must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'. Name the "
            "document with such an id, e.g. 'return-policy' or 'faq:shipping'.",
            details={"documentId": "1-128 of A-Z a-z 0-9 . _ : -"},
        )


def document_get(*, agent: AIAgent, key: str) -> Document:
    document = Document.objects.filter(agent=agent, key=key).first() if text_storable(key) else None
    if document is None:
        raise DocumentNotFound(details={"agentId": agent.pk, "documentId": key})
    return document


def document_list(*, agent: AIAgent, after: tuple[Any, int] | None, limit: int) -> list[Document]:
    """The agent's documents, newest first, after the key (created_at, internal id) of the previous page."""
    queryset = Document.objects.filter(agent=agent).defer("text")
    if after is not None:
        at, last = after
        queryset = queryset.filter(created_at__lte=at).exclude(created_at=at, id__gte=last)
    return list(queryset.order_by("-created_at", "-id")[:limit])


def _content_hash(*, title: str, text: str, url: str, metadata: dict[str, str]) -> str:
    canonical = json.dumps([title, text, url, metadata], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def document_chunks(text: str, *, field: str) -> list[Chunk]:
    """The passages of a document's text, refused when the text is over the limit or has nothing to index."""
    size = len(text.encode())
    limit = settings.KNOWLEDGE_MAX_TEXT_BYTES
    if size > limit:
        raise DocumentTooLarge(
            f"The document's text is {size} bytes, more than the {limit} a document may hold. Split it into "
            "several documents.",
            details={field: f"{size} bytes", "limitBytes": limit},
        )
    chunks = chunks_split(text)
    if not chunks:
        raise DocumentEmpty(details={field: "no words to index"})
    return chunks


def _agent_lock(agent_id: str) -> AIAgent:
    """The agent's row, locked until the transaction ends: writes of one agent's knowledge go one at a time."""
    return AIAgent.objects.select_for_update().only("id", "knowledge_language", "knowledge_passages").get(pk=agent_id)


def _passages_write(
    *, document: Document, agent: AIAgent, chunks: list[Chunk], vectors: list[list[float] | None] | None
) -> int:
    """Replace the document's passages (and its terms) with `chunks` (and their `vectors`, if embedded), in
    the caller's transaction, within KNOWLEDGE_INDEX_TIMEOUT_SECONDS. Returns the change in the agent's
    passage count."""
    limit = settings.KNOWLEDGE_MAX_PASSAGES_PER_AGENT
    before = document.chunks if document.pk is not None else 0
    if len(chunks) > before and agent.knowledge_passages - before + len(chunks) > limit:
        raise KnowledgeFull(
            f"The document makes {len(chunks)} passages; with the agent's other {agent.knowledge_passages - before} "
            f"that is more than the {limit} an agent may hold. Delete documents it no longer needs, or send a "
            "shorter one.",
            details={"passages": len(chunks), "agentPassages": agent.knowledge_passages - before, "limit": limit},
        )
    params: dict[str, Any] = {"document": document.pk, "agent": agent.pk}
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL statement_timeout = {int(settings.KNOWLEDGE_INDEX_TIMEOUT_SECONDS * 1000)}")
        if before:
            cursor.execute(_TERMS_TAKE, params)
            cursor.execute(f"DELETE FROM {_PASSAGE} WHERE document_id = %(document)s", params)
        cursor.execute(
            _INSERT_PASSAGES,
            {
                **params,
                "lang": agent.knowledge_language,
                "title": document.title,
                "positions": list(range(len(chunks))),
                "headings": [chunk.heading for chunk in chunks],
                "texts": [chunk.text for chunk in chunks],
                "codes": [" ".join(codes_of(f"{chunk.heading} {chunk.text}")) for chunk in chunks],
                "embeddings": [vector_literal(vector) for vector in vectors or [None] * len(chunks)],
            },
        )
        cursor.execute(_TERMS_ADD, params)
        cursor.execute("SET LOCAL statement_timeout = 0")
    document.chunks = len(chunks)
    document.chars = sum(len(chunk.text) for chunk in chunks)
    document.language = agent.knowledge_language
    return len(chunks) - before


def _indexing(write):  # type: ignore[no-untyped-def]
    """Run `write()` in its own transaction; a statement past KNOWLEDGE_INDEX_TIMEOUT_SECONDS is refused."""
    try:
        with transaction.atomic():
            return write()
    except DatabaseError as error:
        if not isinstance(error.__cause__, psycopg.errors.QueryCanceled):
            raise
        seconds = settings.KNOWLEDGE_INDEX_TIMEOUT_SECONDS
        raise IndexingTimeout(
            f"Indexing the document took more than {seconds:g} s. Split it into smaller documents.",
            details={"limitSeconds": seconds},
        ) from None


def _counters_add(*, agent_id: str, documents: int, passages: int) -> None:
    if documents or passages:
        AIAgent.objects.filter(pk=agent_id).update(
            knowledge_documents=F("knowledge_documents") + documents,
            knowledge_passages=F("knowledge_passages") + passages,
        )


def _embedded(*, agent: AIAgent, title: str, chunks: list[Chunk]) -> list[list[float] | None] | None:
    """The passages' vectors where the agent has an embedding model (outside any transaction)."""
    if not agent.embedding_model:
        return None
    texts = [f"{title}\n{chunk.heading}\n{chunk.text}" for chunk in chunks]
    vectors = passages_embed(agent=agent_config(agent=agent), texts=texts)
    connection_release()
    return vectors


def document_put_text(
    *, agent: AIAgent, key: str, title: str, text: str, metadata: dict[str, str]
) -> tuple[Document, bool]:
    """Create or replace the document from its text, indexed before this returns. (document, created)."""
    text = text_clean(text).replace("\r\n", "\n")
    chunks = document_chunks(text, field="text")
    digest = _content_hash(title=title, text=text, url="", metadata=metadata)
    unchanged = Document.objects.filter(agent=agent, key=key, content_hash=digest, status=Document.Status.READY).first()
    if unchanged is not None:
        return unchanged, False  # the same content: nothing changes, updatedAt stays (nor is it embedded again)
    vectors = _embedded(agent=agent, title=title, chunks=chunks)

    def write() -> tuple[Document, bool]:
        locked = _agent_lock(agent.pk)
        document = Document.objects.filter(agent=locked, key=key).first()
        if document is not None and document.content_hash == digest and document.status == Document.Status.READY:
            return document, False  # the same content: nothing changes, updatedAt stays
        now = timezone.now()
        created = document is None
        if document is None:
            document = Document(agent=locked, key=key, created_at=now)
        document.title, document.url, document.text, document.metadata = title, "", text, metadata
        document.status, document.error_code, document.fetch_token = Document.Status.READY, "", ""
        document.content_hash, document.updated_at = digest, now
        if created:
            document.save()
        added = _passages_write(document=document, agent=locked, chunks=chunks, vectors=vectors)
        document.save()
        _counters_add(agent_id=locked.pk, documents=int(created), passages=added)
        return document, created

    return _indexing(write)


def document_put_url(
    *, agent: AIAgent, key: str, title: str, url: str, metadata: dict[str, str]
) -> tuple[Document, bool]:
    """Create or replace the document from a URL: the row is PROCESSING now, the page is fetched and indexed
    in the background (`document_fetch_later`). The passages of an earlier version serve until then."""
    with transaction.atomic():
        locked = _agent_lock(agent.pk)
        document = Document.objects.filter(agent=locked, key=key).first()
        now = timezone.now()
        created = document is None
        if document is None:
            document = Document(agent=locked, key=key, created_at=now, updated_at=now)
        document.title, document.url, document.metadata = title, url, metadata
        document.status, document.error_code = Document.Status.PROCESSING, ""
        document.fetch_token = uuid.uuid4().hex
        document.save()
        _counters_add(agent_id=locked.pk, documents=int(created), passages=0)
        pk, token = document.pk, document.fetch_token
        transaction.on_commit(lambda: document_fetch_later(document_pk=pk, token=token))
    return document, created


def document_delete(*, agent: AIAgent, key: str) -> None:
    def write() -> None:
        locked = _agent_lock(agent.pk)
        document = Document.objects.filter(agent=locked, key=key).only("id", "chunks").first()
        if document is None:
            raise DocumentNotFound(details={"agentId": agent.pk, "documentId": key})
        params: dict[str, Any] = {"document": document.pk, "agent": locked.pk}
        with connection.cursor() as cursor:
            if document.chunks:
                cursor.execute(_TERMS_TAKE, params)
            cursor.execute(f"DELETE FROM {_PASSAGE} WHERE document_id = %(document)s", params)
            cursor.execute(f"DELETE FROM {_DOCUMENT} WHERE id = %(document)s", params)
        _counters_add(agent_id=locked.pk, documents=-1, passages=-document.chunks)

    _indexing(write)


def knowledge_reindex(*, agent_id: str) -> None:
    """Index the agent's passages again in its current language (its `knowledge_language` changed)."""

    def write() -> None:
        locked = _agent_lock(agent_id)
        params: dict[str, Any] = {"agent": agent_id, "lang": locked.knowledge_language}
        search = _SEARCH.format(lang="%(lang)s::regconfig", title="d.title", heading="p.heading", text="p.text")
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL statement_timeout = {int(settings.KNOWLEDGE_INDEX_TIMEOUT_SECONDS * 10000)}")
            cursor.execute(
                f"UPDATE {_PASSAGE} p SET search = {search} FROM {_DOCUMENT} d "
                "WHERE d.id = p.document_id AND p.agent_id = %(agent)s",
                params,
            )
            cursor.execute(f"UPDATE {_PASSAGE} SET lexemes = length(search) WHERE agent_id = %(agent)s", params)
            cursor.execute(f"DELETE FROM {_TERM} WHERE agent_id = %(agent)s", params)
            cursor.execute(
                f"INSERT INTO {_TERM} (agent_id, lexeme, passages) SELECT %(agent)s, lexeme, count(*) "
                f"FROM {_PASSAGE} p CROSS JOIN LATERAL unnest(tsvector_to_array(p.search)) AS lexeme "
                "WHERE p.agent_id = %(agent)s GROUP BY lexeme",
                params,
            )
            cursor.execute(f"UPDATE {_DOCUMENT} SET language = %(lang)s WHERE agent_id = %(agent)s", params)

    _indexing(write)


# --- a URL, in the background ------------------------------------------------------------------------------


def document_fetch_later(*, document_pk: int, token: str) -> None:
    """Fetch and index the document's URL in a Celery worker, or without a broker (or when it does not take
    the task) in a daemon thread of this process, as the messages endpoint's replies later do (api/flow/later.py)."""
    if not current_app.conf.task_always_eager:
        from knowledge.tasks import document_fetch_task  # the task calls this module

        try:
            document_fetch_task.apply_async((document_pk, token), retry=False)
            return
        except Exception:
            logger.warning("document task not queued; fetching in this process", document=document_pk)
    threading.Thread(target=_fetch_here, args=(document_pk, token), name=f"document-{document_pk}", daemon=True).start()


def _fetch_here(document_pk: int, token: str) -> None:
    try:
        document_fetch_run(document_pk=document_pk, token=token)
    except Exception:
        logger.exception("document fetch failed", document=document_pk)
    finally:
        connections.close_all()


def document_fetch_run(*, document_pk: int, token: str) -> None:
    """Download the document's URL (the media download's address rules and limits), read its text (HTML,
    PDF, plain text, Markdown) and index it; or mark the document FAILED with the error's code. A later PUT
    or a delete of the document while this runs wins: this run then stores nothing."""
    row = Document.objects.filter(pk=document_pk, fetch_token=token).values("url", "agent_id", "title").first()
    if row is None:
        return
    connection_release()  # none held during the download
    try:
        text = _url_text(url=row["url"])
        chunks = document_chunks(text, field="url")
        agent = AIAgent.objects.get(pk=row["agent_id"])
        vectors = _embedded(agent=agent, title=row["title"], chunks=chunks)
    except ApplicationError as error:
        _fetch_failed(document_pk=document_pk, token=token, code=error.code)
        return
    except Exception:
        logger.exception("document fetch failed", document=document_pk)
        _fetch_failed(document_pk=document_pk, token=token, code="internal_error")
        return

    def write() -> None:
        document = Document.objects.filter(pk=document_pk).only("agent_id").first()
        if document is None:
            return
        locked = _agent_lock(document.agent_id)
        document = Document.objects.filter(pk=document_pk, fetch_token=token).first()
        if document is None:
            return  # replaced or deleted meanwhile
        digest = _content_hash(title=document.title, text=text, url=document.url, metadata=document.metadata)
        document.status, document.error_code, document.fetch_token = Document.Status.READY, "", ""
        if document.content_hash == digest and document.chunks:
            document.save(update_fields=["status", "error_code", "fetch_token"])  # unchanged: updatedAt stays
            return
        document.text, document.content_hash, document.updated_at = text, digest, timezone.now()
        added = _passages_write(document=document, agent=locked, chunks=chunks, vectors=vectors)
        document.save()
        _counters_add(agent_id=locked.pk, documents=0, passages=added)

    try:
        _indexing(write)
    except ApplicationError as error:
        _fetch_failed(document_pk=document_pk, token=token, code=error.code)


def _fetch_failed(*, document_pk: int, token: str, code: str) -> None:
    """FAILED with the error's code; the passages of an earlier good version, if any, stay."""
    logger.info("document fetch failed", document=document_pk, code=code)
    Document.objects.filter(pk=document_pk, fetch_token=token).update(
        status=Document.Status.FAILED, error_code=code, fetch_token=""
    )


def _url_text(*, url: str) -> str:
    """The readable text of the file at `url`, clean; raises the media download's errors, or
    DocumentTypeUnsupported / DocumentTooLarge."""
    downloaded = media_download(url=url, field="url")
    data = downloaded.data
    declared = downloaded.content_type.split(";")[0].strip().lower()
    charset = content_type_charset(downloaded.content_type)
    sniffed = media_sniff(data=data)
    limit = settings.KNOWLEDGE_MAX_TEXT_BYTES + 1  # one more: a longer text is refused, not cut
    # The bytes decide, as for message media (conversations/media/inspect.py): a PNG sent as text/plain is a PNG.
    if sniffed == "application/pdf":
        text = pdf_text_extract(data=data, max_pages=PDF_MAX_PAGES, limit_chars=limit).text
    elif sniffed in _HTML_TYPES or (declared in _HTML_TYPES and sniffed.startswith("text/")):
        text = html_text(text_decode(data=data, charset=charset, limit_chars=len(data)), limit_chars=limit)[0]
    elif sniffed.startswith("text/"):
        text = text_decode(data=data, charset=charset, limit_chars=limit)
    else:
        raise DocumentTypeUnsupported(
            f"The URL's file is {sniffed}, not HTML, PDF, plain text or Markdown. Send the URL of one of those, "
            "or the text itself.",
            details={"url": url, "contentType": declared, "detectedMimeType": sniffed},
        )
    return text_clean(text).replace("\r\n", "\n")
