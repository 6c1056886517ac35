"""The knowledge API (README "The agent's knowledge"): documents put, read, listed, replaced and deleted
through HTTP, scoped to the key's workspace, every refusal the contract's error body."""

import json

import pytest

from channels_app.models import AIAgent
from config.pagination import cursor_encode
from knowledge.models import Document, Passage, Term
from tests.conftest import error_of
from tests.factories import AIAgentFactory, WorkspaceFactory, api_key_for


class Knowledge:
    def __init__(self, client, key: str, agent: AIAgent):
        self.client, self.key, self.agent = client, key, agent

    def url(self, document_id: str = "", agent_id: str | None = None) -> str:
        base = f"/api/v1/agents/{agent_id or self.agent.pk}/documents"
        return f"{base}/{document_id}" if document_id else base

    def put(self, document_id: str, body: dict | None = None, *, raw: bytes | None = None, **kwargs):
        data = raw if raw is not None else json.dumps(body)
        return self.client.put(
            self.url(document_id, **kwargs), data=data, content_type="application/json", HTTP_X_API_KEY=self.key
        )

    def get(self, path: str):
        return self.client.get(path, HTTP_X_API_KEY=self.key)

    def delete(self, document_id: str, **kwargs):
        return self.client.delete(self.url(document_id, **kwargs), HTTP_X_API_KEY=self.key)


@pytest.fixture
def knowledge(client, channel, api_key) -> Knowledge:
    return Knowledge(client, api_key, channel.agent)


WARRANTY = {"title": "Warranty", "text": "# Warranty\n\nTwo years on every part.\n\n## Claims\n\n- Keep the receipt."}


def test_a_text_document_is_indexed_before_the_answer(knowledge):
    response = knowledge.put("warranty", {**WARRANTY, "metadata": {"lang": "en"}})

    assert response.status_code == 200, response.content
    document = response.json()["document"]
    assert list(document) == ["id", "title", "url", "status", "chunks", "chars", "errorCode", "createdAt", "updatedAt"]
    assert (document["id"], document["status"], document["chunks"], document["url"]) == ("warranty", "READY", 2, None)
    assert document["createdAt"] == document["updatedAt"]
    stored = Document.objects.get(key="warranty")
    assert [(p.heading, p.text) for p in stored.passages.all()] == [
        ("Warranty", "Two years on every part."),
        ("Warranty > Claims", "- Keep the receipt."),
    ]
    assert knowledge.get(knowledge.url("warranty")).json() == {"success": True, "document": document}
    agent = AIAgent.objects.get(pk=knowledge.agent.pk)
    assert (agent.knowledge_documents, agent.knowledge_passages) == (3, 4)  # with the channel fixture's two


def test_the_same_content_again_changes_nothing_and_new_content_replaces_the_passages(knowledge):
    first = knowledge.put("warranty", WARRANTY).json()["document"]
    passages = list(Passage.objects.filter(document__key="warranty").values_list("id", flat=True))

    again = knowledge.put("warranty", WARRANTY).json()["document"]
    assert again == first  # updatedAt stays
    assert list(Passage.objects.filter(document__key="warranty").values_list("id", flat=True)) == passages

    changed = knowledge.put("warranty", {**WARRANTY, "text": "Three years on every part."}).json()["document"]
    assert changed["updatedAt"] > first["updatedAt"] and changed["createdAt"] == first["createdAt"]
    assert list(Passage.objects.filter(document__key="warranty").values_list("text", flat=True)) == [
        "Three years on every part."
    ]
    agent = AIAgent.objects.get(pk=knowledge.agent.pk)
    assert agent.knowledge_passages == Passage.objects.filter(agent=agent).count() == 3
    # the terms count exactly the passages that hold each lexeme
    assert not Term.objects.filter(agent=agent, lexeme="receipt").exists()
    assert Term.objects.get(agent=agent, lexeme="three").passages == 1


def test_delete_removes_the_document_its_passages_and_its_terms(knowledge):
    knowledge.put("warranty", WARRANTY)
    response = knowledge.delete("warranty")
    assert response.status_code == 200 and response.json() == {"success": True}
    assert not Document.objects.filter(key="warranty").exists()
    assert not Term.objects.filter(agent=knowledge.agent, lexeme="receipt").exists()
    agent = AIAgent.objects.get(pk=knowledge.agent.pk)
    assert (agent.knowledge_documents, agent.knowledge_passages) == (2, 2)
    again = knowledge.delete("warranty")
    assert error_of(again, status=404)["code"] == "document_not_found"
    assert error_of(knowledge.get(knowledge.url("warranty")), status=404)["code"] == "document_not_found"


def test_the_list_is_newest_first_and_paged(knowledge):
    for index in range(3):
        knowledge.put(f"doc-{index}", {"title": f"Doc {index}", "text": f"Text number {index}."})
    first = knowledge.get(knowledge.url() + "?limit=2").json()
    second = knowledge.get(knowledge.url() + f"?limit=2&cursor={first['nextCursor']}").json()
    third = knowledge.get(knowledge.url() + f"?limit=2&cursor={second['nextCursor']}").json()
    ids = [item["id"] for page in (first, second, third) for item in page["data"]]
    assert ids[:3] == ["doc-2", "doc-1", "doc-0"]
    assert len(ids) == len(set(ids)) == 5 and third["nextCursor"] is None
    bad = knowledge.get(knowledge.url() + "?cursor=nonsense")
    assert error_of(bad, status=400)["details"] == {"cursor": "invalid"}
    for key in (["2026-01-01T00:00:00+00:00", 10**30], ["not a time", 1], ["9999-12-31T23:59:59-23:00", 1]):
        cursor = cursor_encode(key)
        assert error_of(knowledge.get(knowledge.url() + f"?cursor={cursor}"), status=400)["code"] == "invalid_request"


def test_the_agents_list_shows_the_workspaces_agents_and_their_document_counts(knowledge, workspace):
    AIAgentFactory(workspace=WorkspaceFactory(), name="Elsewhere")
    body = knowledge.get("/api/v1/agents").json()
    assert body["success"] is True and body["nextCursor"] is None
    assert [(a["id"], a["name"], a["provider"], a["model"], a["documents"]) for a in body["data"]] == [
        (knowledge.agent.pk, knowledge.agent.name, "builtin", None, 2)
    ]
    assert set(body["data"][0]) == {"id", "name", "provider", "model", "documents", "updatedAt"}


def test_another_workspaces_agent_and_documents_are_not_found(client, knowledge):
    other_workspace = WorkspaceFactory()
    other_key = api_key_for(other_workspace)[1]
    stranger = Knowledge(client, other_key, knowledge.agent)
    knowledge.put("warranty", WARRANTY)
    for response in (
        stranger.put("warranty", WARRANTY),
        stranger.get(stranger.url("warranty")),
        stranger.get(stranger.url()),
        stranger.delete("warranty"),
    ):
        assert error_of(response, status=404)["code"] == "agent_not_found"
        assert error_of(response)["details"] == {"agentId": knowledge.agent.pk}
    assert Document.objects.get(key="warranty").title == "Warranty"  # untouched
    assert error_of(knowledge.get("/api/v1/agents/ag_nope/documents"), status=404)["code"] == "agent_not_found"
    assert error_of(knowledge.get("/api/v1/agents/ag%00x/documents"), status=404)["code"] == "agent_not_found"


@pytest.mark.parametrize(
    ("document_id", "body", "status", "code", "field"),
    [
        ("bad id!", WARRANTY, 400, "invalid_request", "documentId"),
        ("x" * 129, WARRANTY, 400, "invalid_request", "documentId"),
        ("ok", {"title": "T", "text": "a", "url": "https://example.com/a"}, 400, "invalid_request", "text"),
        ("ok", {"title": "T"}, 400, "invalid_request", "text"),
        ("ok", {"text": "words"}, 400, "invalid_request", "title"),
        ("ok", {"title": "T", "text": "words", "colour": "red"}, 400, "invalid_request", "colour"),
        ("ok", {"title": "T", "url": "ftp://example.com/a"}, 400, "invalid_request", "url"),
        ("ok", {"title": "T", "text": 42}, 400, "invalid_request", "text"),
        ("ok", {"title": "T", "text": "w", "metadata": {"k": 1}}, 400, "invalid_request", "metadata.k"),
        ("ok", {"title": "T", "text": "  \n\n ## \n"}, 422, "document_empty", "text"),
        ("ok", {"title": "T", "text": "x\u0000y"}, 400, "invalid_request", "text"),
    ],
)
def test_a_bad_document_is_refused_with_the_error_body(knowledge, document_id, body, status, code, field):
    response = knowledge.put(document_id, body)
    error = error_of(response, status=status)
    assert error["code"] == code and field in error["details"], error
    assert not Document.objects.filter(agent=knowledge.agent, key=document_id).exists()


def test_lone_surrogates_and_nul_in_raw_json_are_refused(knowledge):
    for raw in (b'{"title": "T", "text": "a\\ud800b"}', b'{"title": "T\\u0000", "text": "ab"}'):
        assert error_of(knowledge.put("doc", raw=raw), status=400)["code"] == "invalid_request"
    assert not Document.objects.filter(key="doc").exists()


def test_text_over_a_megabyte_is_refused_and_a_body_over_the_limit_too(knowledge, settings):
    too_long = knowledge.put("big", {"title": "Big", "text": "word " * 210_000})  # 1,050,000 bytes
    error = error_of(too_long, status=413)
    assert error["code"] == "document_too_large" and error["details"]["limitBytes"] == 1024 * 1024
    settings.KNOWLEDGE_MAX_BODY_BYTES = 1000
    too_big = knowledge.put("big", {"title": "Big", "text": "word " * 300})
    assert error_of(too_big, status=413)["code"] == "payload_too_large"
    assert not Document.objects.filter(key="big").exists()


def test_a_megabyte_of_one_word_and_ten_thousand_headings_are_indexed(knowledge):
    one_word = knowledge.put("one-word", {"title": "One word", "text": "a" * (1024 * 1024)})
    assert one_word.status_code == 200, one_word.content
    passages = list(Passage.objects.filter(document__key="one-word").values_list("text", flat=True))
    assert "".join(passages) == "a" * (1024 * 1024) and max(map(len, passages)) <= 1200

    headings = "\n".join(f"{'#' * (1 + n % 6)} Heading {n}\n\nBody {n}." for n in range(10_000))
    response = knowledge.put("headings", {"title": "Headings", "text": headings})
    assert response.status_code == 200, response.content
    assert response.json()["document"]["chunks"] == 10_000
    last = Passage.objects.filter(document__key="headings").order_by("-position").first()
    assert last is not None and last.text == "Body 9999." and last.heading.endswith("Heading 9999")


def test_the_agents_passage_limit_is_refused_with_knowledge_full(knowledge, settings):
    settings.KNOWLEDGE_MAX_PASSAGES_PER_AGENT = 5
    text = "\n\n".join(f"# Part {n}\n\nParagraph {n}." for n in range(4))
    error = error_of(knowledge.put("parts", {"title": "Parts", "text": text}), status=422)
    assert error["code"] == "knowledge_full"
    assert error["details"] == {"passages": 4, "agentPassages": 2, "limit": 5}
    assert not Document.objects.filter(key="parts").exists()
    # a replacement that keeps the agent within the limit is fine
    assert knowledge.put("parts", {"title": "Parts", "text": "# Part\n\nOne."}).status_code == 200


def test_indexing_past_its_deadline_is_refused_and_leaves_nothing(knowledge, settings):
    settings.KNOWLEDGE_INDEX_TIMEOUT_SECONDS = 0.001
    text = "\n\n".join(f"# Part {n}\n\n" + "several words in a paragraph " * 30 for n in range(1000))
    error = error_of(knowledge.put("slow", {"title": "Slow", "text": text}), status=422)
    assert error["code"] == "indexing_timeout"
    assert not Document.objects.filter(key="slow").exists()
    agent = AIAgent.objects.get(pk=knowledge.agent.pk)
    assert agent.knowledge_passages == Passage.objects.filter(agent=agent).count() == 2
