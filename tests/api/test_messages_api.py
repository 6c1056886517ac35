import json
import re

import pytest
from django.db import connection

from billing.credits import credits_grant
from billing.models import UsageLedgerEntry
from channels_app.models import Channel, Workspace
from contacts.models import Contact
from conversations.models import Conversation, Message
from knowledge.services import document_delete
from tests.api.test_query_counts import EXISTING_CONTACT, NEW_CONTACT
from tests.conftest import SEED_TEXT, Api, error_of
from tests.factories import AIAgentFactory, ChannelFactory, WorkspaceFactory, api_key_for, document_for

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_seed_text_example_returns_every_contract_field(api, channel, workspace):
    # when
    response = api.post(SEED_TEXT)

    # then
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {
        *("success", "contactId", "conversationId", "messageId", "conversation", "aiMessages", "usage"),
        "actions",  # README "Actions"
        "sources",  # README "The agent's knowledge"
    }
    assert body["actions"] == []  # the built-in agent takes no actions
    assert body["success"] is True
    assert body["sources"] == []  # the greeting needed no document
    assert all(isinstance(body[key], str) and body[key] for key in ("contactId", "conversationId", "messageId"))
    conversation = body["conversation"]
    assert list(conversation) == [
        # Blubash's fields, then ours
        *("status", "assignedToHuman", "aiAgentId", "aiAgentName", "teamId", "teamName"),
        *("id", "channelId", "contactId", "assignee", "createdAt", "lastMessageAt", "closedAt", "closeReason"),
        "labels",
    ]
    assert conversation["labels"] == []
    assert conversation["id"] == body["conversationId"]
    assert (conversation["status"], conversation["assignedToHuman"]) == ("ACTIVE", False)
    assert (conversation["aiAgentId"], conversation["aiAgentName"]) == (channel.agent.pk, channel.agent.name)
    assert (conversation["teamId"], conversation["teamName"]) == (None, None)  # the channel has no team
    assert conversation["channelId"] == channel.pk
    assert conversation["contactId"] == body["contactId"]
    assert conversation["assignee"] == {"type": "AI_AGENT", "id": channel.agent.pk, "name": channel.agent.name}
    assert ISO.match(conversation["createdAt"]) and ISO.match(conversation["lastMessageAt"])
    assert (conversation["closedAt"], conversation["closeReason"]) == (None, None)
    assert len(body["aiMessages"]) == 1
    reply = body["aiMessages"][0]
    assert list(reply) == ["type", "content", "sender_type", "sender_name", "channel_message_id", "id", "createdAt"]
    assert reply["type"] == "TEXT"
    assert reply["content"] == {"text": {"body": reply["content"]["text"]["body"]}, "type": "text"}
    assert reply["content"]["text"]["body"]
    assert (reply["sender_type"], reply["sender_name"], reply["channel_message_id"]) == ("AI", channel.agent.name, None)
    assert ISO.match(reply["createdAt"])
    assert body["usage"] == {
        "credits": 1,
        "balance": 99,
        "inputTokens": body["usage"]["inputTokens"],
        "outputTokens": body["usage"]["outputTokens"],
    }
    assert body["usage"]["inputTokens"] > 0 and body["usage"]["outputTokens"] > 0
    # and the database holds what the response says
    contact = Contact.objects.get(pk=body["contactId"])
    assert (contact.identifier, contact.name, contact.workspace_id) == ("user@example.com", "User Name", workspace.pk)
    inbound = Message.objects.get(pk=body["messageId"])
    assert (inbound.direction, inbound.status, inbound.seq, inbound.part) == ("INBOUND", "ANSWERED", 1, 0)
    assert inbound.content == SEED_TEXT["content"]
    stored_reply = Message.objects.get(pk=reply["id"])
    assert (stored_reply.direction, stored_reply.reply_to_id, stored_reply.credits) == ("OUTBOUND", inbound.pk, 1)
    workspace.refresh_from_db()
    assert (workspace.credit_balance, workspace.credit_reserved) == (99, 0)
    charge = UsageLedgerEntry.objects.get(workspace=workspace, kind="CHARGE")
    assert (charge.delta, charge.balance_after, charge.message_id) == (-1, 99, inbound.pk)


def test_the_channels_team_is_named_in_the_conversation(api, channel):
    from channels_app.models import Team

    channel.team = Team.objects.create(workspace=channel.workspace, name="Suporte T\u00e9cnico")
    channel.save()

    conversation = api.post().json()["conversation"]

    assert (conversation["teamId"], conversation["teamName"]) == (channel.team.pk, "Suporte T\u00e9cnico")
    assert conversation["teamId"].startswith("team_")


def test_same_contact_lands_in_same_contact_and_conversation(api):
    first = api.post(SEED_TEXT).json()
    second = api.post({**SEED_TEXT, "contactName": "Another Name"}).json()

    assert second["contactId"] == first["contactId"]
    assert second["conversationId"] == first["conversationId"]
    assert second["messageId"] != first["messageId"]
    assert Contact.objects.get().name == "User Name"  # the name is used when the contact is created
    assert list(Message.objects.order_by("seq", "part").values_list("seq", "part", "direction")) == [
        (1, 0, "INBOUND"),
        (1, 1, "OUTBOUND"),
        (2, 0, "INBOUND"),
        (2, 1, "OUTBOUND"),
    ]


def test_new_contact_identifier_creates_new_contact_and_conversation(api):
    first = api.post(SEED_TEXT).json()
    second = api.post({**SEED_TEXT, "contactIdentifier": "other@example.com"}).json()

    assert second["contactId"] != first["contactId"]
    assert second["conversationId"] != first["conversationId"]
    assert Contact.objects.count() == 2 and Conversation.objects.count() == 2


def test_same_identifier_in_two_workspaces_is_two_contacts(api, client):
    other_channel = ChannelFactory()
    Workspace.objects.filter(pk=other_channel.workspace_id).update(credit_balance=5)
    other = Api(client, other_channel, api_key_for(other_channel.workspace)[1])

    assert api.post().status_code == 200 and other.post().status_code == 200
    assert Contact.objects.filter(identifier="user@example.com").count() == 2


def test_knowledge_answer_and_greeting(api):
    answer = api.post({**SEED_TEXT, "content": {"text": {"body": "how long does shipping take"}}}).json()
    greeting = api.post({**SEED_TEXT, "content": {"text": {"body": "Hi there!"}}}).json()

    assert answer["aiMessages"][0]["content"]["text"]["body"] == "Orders ship within 2 business days."
    assert greeting["aiMessages"][0]["content"]["text"]["body"] == "Hello! How can I help you today?"


def test_a_knowledge_change_is_seen_at_the_next_message(api, channel):
    # given: a first message found nothing about a warranty
    def answer_to(question: str) -> tuple[str, list]:
        body = api.post({**SEED_TEXT, "content": {"text": {"body": question}}}).json()
        return body["aiMessages"][0]["content"]["text"]["body"], body["sources"]

    assert answer_to("Do you have a warranty?") == (channel.agent.fallback_text, [])

    # when / then: a document is added, replaced, deleted (as the API and the admin do), the agent untouched
    document_for(channel.agent, key="warranty", title="Is there a warranty?", text="Two years.")
    source = {"documentId": "warranty", "title": "Is there a warranty?", "url": None}
    assert answer_to("Do you have a warranty?") == ("Two years.", [source])
    document_for(channel.agent, key="warranty", title="Is there a warranty?", text="Three years.")
    assert answer_to("Do you have a warranty?") == ("Three years.", [source])
    document_delete(agent=channel.agent, key="warranty")
    assert answer_to("Do you have a warranty?") == (channel.agent.fallback_text, [])


def test_the_specs_example_text_is_greeted(api):
    body = api.post(SEED_TEXT).json()  # "Hello, how can I help you?"
    assert body["aiMessages"][0]["content"]["text"]["body"] == "Hello! How can I help you today?"


def test_long_answer_is_split_into_several_ai_messages_in_order(api, channel):
    paragraphs = [f"Paragraph {n}: " + "word " * 30 for n in range(3)]
    document_for(channel.agent, title="Tell me about the warranty", text="\n\n".join(paragraphs))
    channel.agent.split_threshold_chars = 200
    channel.agent.save()

    body = api.post({**SEED_TEXT, "content": {"text": {"body": "warranty"}}}).json()

    texts = [message["content"]["text"]["body"] for message in body["aiMessages"]]
    assert texts == [p.strip() for p in paragraphs]
    assert [m.part for m in Message.objects.filter(direction="OUTBOUND").order_by("part")] == [1, 2, 3]
    assert body["usage"]["credits"] == 1  # one reply, however many messages it takes


# --- errors -----------------------------------------------------------------------------------------------


def test_missing_api_key(api):
    response = api.post(key="")
    assert response.status_code == 401
    assert error_of(response)["code"] == "missing_api_key"


@pytest.mark.parametrize("key", ["nonsense", "abcdefgh.wrongsecret", "a.b"])
def test_invalid_api_key(api, key):
    response = api.post(key=key)
    assert response.status_code == 401
    error = error_of(response)
    assert error["code"] == "invalid_api_key"
    assert "reason" not in error["details"]  # an unknown key is not told apart from a wrong secret


def test_valid_prefix_with_wrong_secret_is_plain_invalid(api, api_key):
    prefix = api_key.split(".")[0]
    error = error_of(api.post(key=f"{prefix}.{'x' * 32}"))
    assert error["code"] == "invalid_api_key" and "reason" not in error["details"]


def test_channel_not_found(api):
    response = api.post(channel_id="ch_doesnotexist")
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "channel_not_found" and error["details"] == {"channelId": "ch_doesnotexist"}


def test_channel_of_another_workspace_is_not_found(api):
    foreign = ChannelFactory()
    response = api.post(channel_id=foreign.pk)
    assert response.status_code == 404
    assert error_of(response)["code"] == "channel_not_found"
    assert Message.objects.count() == 0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"is_active": False}, "inactive"),
        ({"agent": None}, "without_an_AI_agent"),
        ({"type": Channel.Type.WHATSAPP}, "not_an_API_channel"),
    ],
)
def test_channel_unavailable(api, channel, change, reason):
    Channel.objects.filter(pk=channel.pk).update(**change)
    response = api.post()
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "channel_unavailable" and error["details"]["reason"] == reason
    assert Message.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**SEED_TEXT, "type": "STICKER"}, "type"),
        ({k: v for k, v in SEED_TEXT.items() if k != "type"}, "type"),
        ({k: v for k, v in SEED_TEXT.items() if k != "contactIdentifier"}, "contactIdentifier"),
        ({**SEED_TEXT, "contactIdentifier": "   "}, "contactIdentifier"),
        ({**SEED_TEXT, "contactIdentifier": "x" * 321}, "contactIdentifier"),
        ({**SEED_TEXT, "contactIdentifier": 42}, "contactIdentifier"),
        ({**SEED_TEXT, "contactName": "n" * 201}, "contactName"),
        ({k: v for k, v in SEED_TEXT.items() if k != "content"}, "content"),
        ({**SEED_TEXT, "content": "hello"}, "content"),
        ({**SEED_TEXT, "content": {"image": {"url": "https://example.com/a.jpg"}}}, "content"),
        ({**SEED_TEXT, "content": {"text": {"body": "hi"}, "image": {}}}, "content"),
        ({**SEED_TEXT, "content": {"text": {"body": ""}}}, "content.text.body"),
        ({**SEED_TEXT, "content": {"text": {"body": "b" * 4097}}}, "content.text.body"),
        ({**SEED_TEXT, "content": {"text": {"bdy": "hi"}}}, "content.text.bdy"),
        ({**SEED_TEXT, "type": "IMAGE", "content": {"image": {"url": "ftp://example.com/a.jpg"}}}, "content.image.url"),
        ({**SEED_TEXT, "type": "DOCUMENT", "content": {"document": {"filename": "a.pdf"}}}, "content.document.url"),
    ],
)
def test_invalid_request_names_the_field(api, body, field):
    response = api.post(body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert field in error["details"], error
    assert Message.objects.count() == 0


@pytest.mark.parametrize(
    ("raw", "content_type", "field"),
    [
        ("{not json", "application/json", "body"),
        ("[1, 2]", "application/json", "body"),
        ("", "application/json", "body"),
        (json.dumps(SEED_TEXT), "text/plain", "Content-Type"),
        ("type=TEXT", "application/x-www-form-urlencoded", "Content-Type"),
    ],
)
def test_malformed_body(api, raw, content_type, field):
    response = api.post(raw=raw, content_type=content_type)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_request" and field in error["details"]


def test_oversized_body_is_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api.post({**SEED_TEXT, "content": {"text": {"body": "x" * 2000}}})
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


def test_insufficient_credits_is_402_and_agent_not_called(api, workspace, channel, scripted_agent):
    scripted_agent.take_over(channel.agent)
    Workspace.objects.filter(pk=workspace.pk).update(credit_balance=0)

    response = api.post()

    assert response.status_code == 402
    error = error_of(response)
    assert error["code"] == "insufficient_credits"
    assert error["details"] == {"available": 0, "required": 1}
    assert error["message"].startswith("The workspace has 0 credits available and this message needs 1 credit. ")
    assert scripted_agent.calls == []
    assert Message.objects.count() == 0


def test_free_agent_needs_no_credits(api, workspace, channel):
    Workspace.objects.filter(pk=workspace.pk).update(credit_balance=0)
    channel.agent.credit_cost_per_reply = 0
    channel.agent.save()

    body = api.post().json()

    assert body["usage"]["credits"] == 0 and body["usage"]["balance"] == 0
    assert not UsageLedgerEntry.objects.filter(kind="CHARGE").exists()


def test_unexpected_error_is_500_without_trace_and_keeps_the_message(api, workspace, channel, scripted_agent):
    scripted_agent.take_over(channel.agent).script(RuntimeError("secret internals"))

    response = api.post()

    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "internal_error" and "secret" not in response.content.decode()
    inbound = Message.objects.get()
    assert (inbound.status, inbound.error_code, inbound.credits_reserved) == ("FAILED", "internal_error", 0)
    workspace.refresh_from_db()
    assert (workspace.credit_balance, workspace.credit_reserved) == (100, 0)


def test_balance_equals_ledger_sum(api, workspace):
    for n in range(3):
        api.post({**SEED_TEXT, "content": {"text": {"body": f"message {n}"}}})
    workspace.refresh_from_db()
    assert (
        workspace.credit_balance
        == sum(UsageLedgerEntry.objects.filter(workspace=workspace).values_list("delta", flat=True))
        == 97
    )


def test_hot_path_query_count_is_pinned(api, assert_statements):
    api.post()  # the contact and conversation exist
    # as tests/api/test_query_counts.py counts them, with the search of the agent's documents
    with assert_statements(EXISTING_CONTACT + api.extra):
        assert api.post({**SEED_TEXT, "content": {"text": {"body": "second"}}}).status_code == 200


def test_new_contact_query_count_is_pinned(api, assert_statements):
    api.post()
    with assert_statements(NEW_CONTACT + api.extra):
        assert api.post({**SEED_TEXT, "contactIdentifier": "new@example.com"}).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_no_transaction_or_connection_is_held_while_the_agent_runs(client, scripted_agent):
    # given a real commit-per-transaction setup (not the test's wrapping transaction)
    channel = ChannelFactory(workspace=WorkspaceFactory(credit_balance=0))
    from billing.credits import credits_grant

    credits_grant(workspace=channel.workspace, amount=10)
    api = Api(client, channel, api_key_for(channel.workspace)[1])
    seen = []

    def spy(**kwargs):
        seen.append(
            {"in_transaction": connection.in_atomic_block, "connection_open": connection.connection is not None}
        )

    scripted_agent.take_over(channel.agent).script(spy)

    # when
    response = api.post()

    # then
    assert response.status_code == 200
    assert seen == [{"in_transaction": False, "connection_open": False}]


def test_agent_config_change_is_seen_at_once(api, channel):
    api.post()
    replacement = AIAgentFactory(workspace=channel.workspace, name="Replacement")
    Channel.objects.filter(pk=channel.pk).update(agent=replacement)

    body = api.post().json()

    assert body["conversation"]["assignee"]["id"] == replacement.pk
    assert Conversation.objects.get().agent_id == replacement.pk


@pytest.mark.parametrize("agent_fails", [False, True])
def test_reservation_released_by_cleanup_mid_request_is_not_given_back_twice(
    api, workspace, channel, scripted_agent, agent_fails
):
    # given a request whose agent call outlives its lease, and a clean-up that judges it dead meanwhile
    from datetime import timedelta

    from django.utils import timezone

    from api.maintenance.cleanup import abandoned_messages_release
    from conversations.agents.errors import AgentUnavailable

    def slow_agent(**kwargs):
        assert abandoned_messages_release(now=timezone.now() + timedelta(days=1)) == (1, 1)
        if agent_fails:
            raise AgentUnavailable()

    scripted_agent.take_over(channel.agent).script(slow_agent)

    # when
    response = api.post()

    # then the reservation went back once, and nothing was charged for it
    assert response.status_code == (502 if agent_fails else 200)
    workspace.refresh_from_db()
    assert (workspace.credit_balance, workspace.credit_reserved) == (100, 0)
    assert not UsageLedgerEntry.objects.filter(kind="CHARGE").exists()
    inbound = Message.objects.get(direction="INBOUND")
    assert inbound.status == ("FAILED" if agent_fails else "ANSWERED")
    if not agent_fails:
        assert response.json()["usage"]["credits"] == 0


@pytest.mark.django_db(transaction=True)
def test_an_exhausted_connection_pool_is_503_service_busy(client):
    # given: a process whose pool has handed out every connection it may open (Django's psycopg pool,
    # PostgreSQL only), and a pool timeout short enough for a test
    from psycopg_pool import PoolTimeout

    channel = ChannelFactory.create()
    credits_grant(workspace=channel.workspace, amount=10)
    api = Api(client, channel, api_key_for(channel.workspace)[1])
    pool = connection.pool
    sizes, timeout = (pool.min_size, pool.max_size), pool.timeout
    connection.close()  # this thread's connection goes back to the pool
    held = []
    try:
        pool.resize(min_size=1, max_size=1)  # opens no new connection past the one...
        pool.timeout = 0.5
        with pytest.raises(PoolTimeout):
            for _ in range(sizes[1] + 1):  # ...and this takes every idle one (at most the old maximum)
                held.append(pool.getconn(timeout=0.2))

        # when
        response = api.post()
    finally:
        for held_connection in held:
            pool.putconn(held_connection)
        pool.timeout = timeout
        pool.resize(*sizes)

    # then: the request waited DB_POOL_TIMEOUT for a connection and was told to come back
    assert response.status_code == 503 and response["Retry-After"] == "2", response.content
    error = error_of(response)
    assert error["code"] == "service_busy" and error["details"] == {"reason": "database_pool_exhausted"}
    assert Message.objects.count() == 0


@pytest.mark.parametrize("accept", ["", "text/html", "application/xml;q=1", "image/*"])
def test_an_accept_header_without_json_is_answered_in_json_not_406(api, accept):
    # found by schemathesis: an empty Accept header was a 406 that the schema did not document
    response = api.post(HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["success"] is True


def test_an_error_for_an_accept_header_without_json_is_the_error_body(api):
    response = api.post({**SEED_TEXT, "type": "POSTCARD"}, HTTP_ACCEPT="")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_request"
