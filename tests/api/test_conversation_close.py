"""The conversation life cycle through the API: `POST /api/v1/conversations/{id}/close` (idempotent, scoped to
the key's workspace, announced once as `conversation.closed`), a closed conversation's contact starting
afresh, the inactivity timeout seen by the next message without waiting for the clean-up, and a close that
lands while a message is being answered."""

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.cache import cache

from api.flow.messaging import render
from channels_app.models import Channel, Workspace
from conversations.models import Conversation, Message
from tests.conftest import SEED_TEXT, Api, error_of
from tests.factories import ChannelFactory, WorkspaceFactory, api_key_for
from webhooks.models import WebhookEvent
from webhooks.services import webhook_set

T0 = datetime(2026, 11, 25, 12, 0, 10, tzinfo=UTC)
DAY = timedelta(seconds=86400)


def close(client, conversation_id: str, key: str | None):
    headers = {"HTTP_X_API_KEY": key} if key else {}
    return client.post(f"/api/v1/conversations/{conversation_id}/close", **headers)


def text(body: str) -> dict:
    return {**SEED_TEXT, "content": {"text": {"body": body}}}


@pytest.fixture
def hooked(channel, settings):
    """The channel has a webhook, so every close writes its `conversation.closed` event (the test's
    transaction never commits, so nothing is sent)."""
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = ["127.0.0.1"]
    webhook_set(channel_id=channel.pk, url="http://127.0.0.1:9/hook")
    return channel


def closed_events() -> list[dict]:
    return [
        json.loads(payload)
        for payload in WebhookEvent.objects.filter(type="conversation.closed")
        .order_by("created_at", "pk")
        .values_list("payload", flat=True)
    ]


def test_close_answers_the_conversation_closed_and_announces_it(api, client, api_key, hooked):
    # given
    reply = api.post().json()
    conversation_id = reply["conversationId"]

    # when
    with time_machine.travel(T0, tick=False):
        response = close(client, conversation_id, api_key)

    # then: the 200 body's conversation object, closed now through the API
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"success", "conversation"} and body["success"] is True
    expected = {
        **reply["conversation"],
        "status": "CLOSED",
        "closedAt": "2026-11-25T12:00:10.000Z",
        "closeReason": "api",
    }
    assert body["conversation"] == expected
    assert list(body["conversation"]) == list(reply["conversation"])  # same fields, same order
    stored = Conversation.objects.get(pk=conversation_id)
    assert (stored.status, stored.close_reason, stored.closed_at) == ("CLOSED", "api", T0)

    # and the channel's webhook gets the same object, once
    (event,) = closed_events()
    assert event["type"] == "conversation.closed"
    assert event["data"] == {"conversation": body["conversation"]}
    assert WebhookEvent.objects.get(type="conversation.closed").contact_id == reply["contactId"]


def test_closing_a_closed_conversation_answers_the_same_unchanged_and_emits_nothing(api, client, api_key, hooked):
    # given: a conversation closed once
    conversation_id = api.post().json()["conversationId"]
    with time_machine.travel(T0, tick=False):
        first = close(client, conversation_id, api_key)

    # when: closed again, later
    with time_machine.travel(T0 + DAY, tick=False):
        again = close(client, conversation_id, api_key)

    # then
    assert again.status_code == 200
    assert again.content == first.content
    assert again.content == render(first.json())  # the compact JSON the API always sends
    assert len(closed_events()) == 1


def test_a_conversation_closed_otherwise_is_answered_as_it_is(api, client, api_key, hooked):
    conversation_id = api.post().json()["conversationId"]
    Conversation.objects.filter(pk=conversation_id).update(status="CLOSED", closed_at=T0, close_reason="operator")

    body = close(client, conversation_id, api_key).json()

    assert (body["conversation"]["closeReason"], body["conversation"]["closedAt"]) == (
        "operator",
        "2026-11-25T12:00:10.000Z",
    )
    assert closed_events() == []


def test_another_workspace_s_conversation_is_not_found_and_stays_active(api, client):
    # given: a conversation of the workspace, and a key of another one
    conversation_id = api.post().json()["conversationId"]
    other = WorkspaceFactory()
    other_key = api_key_for(other)[1]

    # when
    response = close(client, conversation_id, other_key)
    unknown = close(client, "cv_doesnotexist", other_key)
    nul = close(client, "cv_%00", other_key)

    # then
    for refused in (response, unknown, nul):
        error = error_of(refused, status=404)
        assert error["code"] == "conversation_not_found"
    assert error_of(response)["details"] == {"conversationId": conversation_id}
    assert Conversation.objects.get(pk=conversation_id).status == "ACTIVE"


def test_close_needs_a_valid_key(api, client):
    conversation_id = api.post().json()["conversationId"]

    assert error_of(close(client, conversation_id, None), status=401)["code"] == "missing_api_key"
    assert error_of(close(client, conversation_id, "nope.nope"), status=401)["code"] == "invalid_api_key"
    assert Conversation.objects.get(pk=conversation_id).status == "ACTIVE"


def test_close_counts_against_the_key_s_rate_limit(api, client, api_key, workspace):
    # given: one request a minute, used by the message
    cache.clear()
    Workspace.objects.filter(pk=workspace.pk).update(rate_limit_per_minute=1)
    with time_machine.travel(T0, tick=False):
        conversation_id = api.post().json()["conversationId"]

        # when
        refused = close(client, conversation_id, api_key)

    # then
    assert error_of(refused, status=429)["code"] == "rate_limited"
    assert refused["Retry-After"] == "50"
    assert Conversation.objects.get(pk=conversation_id).status == "ACTIVE"
    cache.clear()


def test_close_takes_no_body_and_only_post(api, client, api_key):
    conversation_id = api.post().json()["conversationId"]

    response = client.get(f"/api/v1/conversations/{conversation_id}/close", HTTP_X_API_KEY=api_key)

    assert response.status_code == 405
    assert error_of(response)["code"]


def test_the_next_message_after_a_close_opens_a_new_conversation_with_no_history(
    api, client, api_key, channel, scripted_agent
):
    # given: a conversation of two exchanges, closed
    scripted_agent.take_over(channel.agent)
    first = api.post(text("Can I get a refund?")).json()
    api.post(text("How long does shipping take?"))
    close(client, first["conversationId"], api_key)

    # when
    reply = api.post(text("Hello again"))

    # then: a new, active conversation of the same contact; the agent saw only the new message
    assert reply.status_code == 200, reply.content
    body = reply.json()
    assert body["contactId"] == first["contactId"]
    assert body["conversationId"] != first["conversationId"]
    assert (body["conversation"]["status"], body["conversation"]["closedAt"], body["conversation"]["closeReason"]) == (
        "ACTIVE",
        None,
        None,
    )
    assert [item.content for item in scripted_agent.calls[-1].history] == [{"text": {"body": "Hello again"}}]
    new = Conversation.objects.get(pk=body["conversationId"])
    assert (new.last_seq, new.status) == (1, "ACTIVE")
    old = Conversation.objects.get(pk=first["conversationId"])
    assert (old.status, old.last_seq, old.messages.count()) == ("CLOSED", 2, 4)


def test_a_close_while_the_message_is_answered_keeps_the_answer_in_its_conversation(
    api, client, api_key, channel, scripted_agent, hooked
):
    # given: the agent is still thinking about the conversation's first message when it is closed
    scripted_agent.take_over(channel.agent)
    closes = []

    def close_meanwhile(*, agent, history):
        conversation_id = Message.objects.get(direction="INBOUND").conversation_id
        closes.append(close(client, conversation_id, api_key))
        return "Here is your answer."

    scripted_agent.script(close_meanwhile)

    # when
    response = api.post()

    # then: answered, in the conversation the message belongs to, which stays closed
    assert response.status_code == 200, response.content
    body = response.json()
    (closed,) = closes
    assert closed.status_code == 200
    assert body["conversationId"] == closed.json()["conversation"]["id"]
    assert [m["content"]["text"]["body"] for m in body["aiMessages"]] == ["Here is your answer."]
    assert (body["conversation"]["status"], body["conversation"]["closeReason"]) == ("CLOSED", "api")
    assert body["conversation"]["closedAt"] == closed.json()["conversation"]["closedAt"]
    conversation = Conversation.objects.get(pk=body["conversationId"])
    assert (conversation.status, conversation.close_reason) == ("CLOSED", "api")
    assert sorted(conversation.messages.values_list("direction", "status")) == [
        ("INBOUND", "ANSWERED"),
        ("OUTBOUND", "SENT"),
    ]
    assert Message.objects.get(direction="INBOUND").credits_reserved == 0
    assert len(closed_events()) == 1
    # and the next message starts a new conversation
    assert api.post().json()["conversationId"] != body["conversationId"]


# --- the inactivity timeout, seen by the next message ---------------------------------------------------


def test_a_message_after_the_timeout_closes_the_idle_conversation_and_opens_a_new_one(
    api, channel, scripted_agent, hooked
):
    # given: a conversation whose last message (the reply) was at T0
    scripted_agent.take_over(channel.agent)
    with time_machine.travel(T0, tick=False):
        first = api.post(text("Can I get a refund?")).json()

    # when: the contact writes again a day and a millisecond later; the clean-up has not run
    later = T0 + DAY + timedelta(milliseconds=1)
    with time_machine.travel(later, tick=False):
        response = api.post(text("Hello again"))

    # then: the old conversation was closed for inactivity at once, and announced; the new one starts empty
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["conversationId"] != first["conversationId"]
    assert body["conversation"]["status"] == "ACTIVE"
    old = Conversation.objects.get(pk=first["conversationId"])
    assert (old.status, old.close_reason, old.closed_at) == ("CLOSED", "inactivity", later)
    assert [item.content for item in scripted_agent.calls[-1].history] == [{"text": {"body": "Hello again"}}]
    (event,) = closed_events()
    assert event["data"]["conversation"] == {
        **first["conversation"],
        "status": "CLOSED",
        "closedAt": "2026-11-26T12:00:10.001Z",
        "closeReason": "inactivity",
    }
    assert Conversation.objects.filter(status="ACTIVE").count() == 1


def test_a_message_exactly_at_the_timeout_continues_the_conversation(api, hooked):
    with time_machine.travel(T0, tick=False):
        first = api.post().json()

    with time_machine.travel(T0 + DAY, tick=False):
        again = api.post().json()

    assert again["conversationId"] == first["conversationId"]
    assert closed_events() == []


def test_the_channel_s_own_timeout_counts_and_zero_never_closes(api, channel, hooked):
    # given: a one-minute timeout
    Channel.objects.filter(pk=channel.pk).update(inactivity_timeout_seconds=60)
    with time_machine.travel(T0, tick=False):
        first = api.post().json()
    with time_machine.travel(T0 + timedelta(seconds=61), tick=False):
        second = api.post().json()

    # when: the timeout is turned off and a year goes by
    Channel.objects.filter(pk=channel.pk).update(inactivity_timeout_seconds=0)
    with time_machine.travel(T0 + 365 * DAY, tick=False):
        third = api.post().json()

    # then
    assert second["conversationId"] != first["conversationId"]
    assert third["conversationId"] == second["conversationId"]
    assert [e["data"]["conversation"]["id"] for e in closed_events()] == [first["conversationId"]]


def test_an_idempotent_retry_of_a_message_in_a_closed_conversation_answers_in_that_conversation(
    api, client, api_key, channel, scripted_agent
):
    # given: the message failed, then its conversation was closed
    from conversations.agents.errors import AgentUnavailable

    scripted_agent.take_over(channel.agent)
    scripted_agent.script(AgentUnavailable())
    failed = api.post(idempotency_key="retry-after-close")
    assert failed.status_code == 502
    conversation_id = Message.objects.get().conversation_id
    close(client, conversation_id, api_key)

    # when
    retried = api.post(idempotency_key="retry-after-close")

    # then: the stored message is answered where it is; nothing reopens
    assert retried.status_code == 200, retried.content
    body = retried.json()
    assert body["conversationId"] == conversation_id
    assert body["conversation"]["status"] == "CLOSED"
    assert Conversation.objects.get(pk=conversation_id).status == "CLOSED"
    assert Conversation.objects.count() == 1


def test_another_channel_s_conversation_of_the_contact_is_left_alone(api, client, api_key, workspace):
    # given: the same contact on two channels
    other_channel = ChannelFactory(workspace=workspace)
    first = api.post().json()
    elsewhere = Api(client, other_channel, api_key).post().json()

    # when
    close(client, first["conversationId"], api_key)

    # then
    assert Conversation.objects.get(pk=elsewhere["conversationId"]).status == "ACTIVE"
    assert Api(client, other_channel, api_key).post().json()["conversationId"] == elsewhere["conversationId"]
