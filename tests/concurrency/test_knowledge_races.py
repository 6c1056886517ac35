"""Races of the agent's knowledge (docs/architecture.md, "The agent's knowledge"), on PostgreSQL with real
threads: PUTs of one document at once give one winner whose passages are all there; PUTs of several
documents keep the agent's counters and terms exact; a message that races a replacement or a delete is
answered from one whole version; a delete is seen by the next message."""

import json
import threading

import pytest
from django.db import connection

from billing.credits import credits_grant
from channels_app.models import AIAgent
from knowledge.models import Document, Passage, Term
from knowledge.services import document_delete
from tests.concurrency.conftest import run_together
from tests.conftest import SEED_TEXT, Api
from tests.factories import ChannelFactory as Channels
from tests.factories import WorkspaceFactory, api_key_for, document_for

pytestmark = pytest.mark.django_db(transaction=True)


def version(n: int) -> str:
    """A document of four sections, each passage saying which version it belongs to."""
    return "\n\n".join(f"# Section {s}\n\nVersion v{n}x of section {s}." for s in range(4))


def put(api: Api, agent_id: str, document_id: str, body: dict):
    return api.client.put(
        f"/api/v1/agents/{agent_id}/documents/{document_id}",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_X_API_KEY=api.key,
    )


def counters_match(agent_id: str) -> None:
    agent = AIAgent.objects.get(pk=agent_id)
    assert agent.knowledge_documents == Document.objects.filter(agent=agent).count()
    assert agent.knowledge_passages == Passage.objects.filter(agent=agent).count()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT lexeme, count(*) FROM knowledge_passage p, unnest(tsvector_to_array(p.search)) lexeme "
            "WHERE p.agent_id = %s GROUP BY lexeme",
            [agent_id],
        )
        expected = dict(cursor.fetchall())
    assert dict(Term.objects.filter(agent=agent).values_list("lexeme", "passages")) == expected


@pytest.fixture
def setup():
    workspace = WorkspaceFactory.create()
    credits_grant(workspace=workspace, amount=1000, note="race test credits")
    channel = Channels.create(workspace=workspace)
    assert channel.agent is not None
    return channel, api_key_for(workspace)[1]


def test_puts_of_one_document_at_once_give_one_whole_winner(setup):
    channel, key = setup
    agent_id = channel.agent.pk

    results = run_together(
        8,
        lambda index, api: put(api, agent_id, "doc", {"title": "Doc", "text": version(index)}),
        channel=channel,
        key=key,
    )

    assert [response.status_code for response in results] == [200] * 8
    texts = list(Passage.objects.filter(document__key="doc").values_list("text", flat=True))
    assert len(texts) == 4
    versions = {text.split()[1] for text in texts}
    assert len(versions) == 1, texts  # never a mix of two PUTs
    assert Document.objects.get(key="doc").chunks == 4
    counters_match(agent_id)


def test_puts_and_deletes_of_many_documents_keep_the_counters_and_terms_exact(setup):
    channel, key = setup
    agent_id = channel.agent.pk

    def work(index: int, api: Api):
        response = put(api, agent_id, f"doc-{index % 4}", {"title": f"Doc {index}", "text": version(index)})
        if index % 3 == 0:
            api.client.delete(f"/api/v1/agents/{agent_id}/documents/doc-{index % 4}", HTTP_X_API_KEY=api.key)
        return response.status_code

    assert set(run_together(12, work, channel=channel, key=key)) == {200}
    counters_match(agent_id)


def test_a_message_racing_a_replacement_is_answered_from_one_whole_version(setup):
    channel, key = setup
    agent = channel.agent
    document_for(agent, key="doc", title="Doc", text=version(0))
    stop = threading.Event()

    def replace_again_and_again() -> None:
        try:
            n = 1
            while not stop.is_set():
                document_for(AIAgent.objects.get(pk=agent.pk), key="doc", title="Doc", text=version(n))
                n += 1
        finally:
            connection.close()

    writer = threading.Thread(target=replace_again_and_again)
    writer.start()
    try:

        def ask(index: int, api: Api) -> dict:
            body = {**SEED_TEXT, "contactIdentifier": f"c{index}@example.com"}
            return api.post({**body, "content": {"text": {"body": "version section"}}}).json()

        answers = run_together(10, ask, channel=channel, key=key)
    finally:
        stop.set()
        writer.join(30)
    for answer in answers:
        assert answer["sources"] == [{"documentId": "doc", "title": "Doc", "url": None}], answer
        assert answer["aiMessages"][0]["content"]["text"]["body"].startswith("Version v")
    counters_match(agent.pk)


def test_a_delete_during_a_message_lets_it_finish_and_the_next_one_does_not_see_the_document(
    setup, scripted_agent, client
):
    channel, key = setup
    agent = channel.agent
    document_for(agent, key="warranty", title="Warranty", text="Two years on every part.")
    scripted_agent.take_over(agent)

    def delete_while_thinking(agent, history):
        # the think phase found the passage; the document goes while the agent works
        document_delete(agent=AIAgent.objects.get(pk=agent.id), key="warranty")
        connection.close()
        return agent.knowledge[0].text

    scripted_agent.script(delete_while_thinking)
    api = Api(client, channel, key)
    first = api.post({**SEED_TEXT, "content": {"text": {"body": "warranty?"}}})
    assert first.status_code == 200
    assert first.json()["sources"] == [{"documentId": "warranty", "title": "Warranty", "url": None}]
    assert first.json()["aiMessages"][0]["content"]["text"]["body"] == "Two years on every part."

    second = api.post({**SEED_TEXT, "content": {"text": {"body": "warranty?"}}}).json()
    assert second["sources"] == []
    assert second["aiMessages"][0]["content"]["text"]["body"] == agent.fallback_text
    counters_match(agent.pk)
