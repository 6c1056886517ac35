"""message.replied and message.failed, emitted by real POSTs to the messages endpoint and delivered to a
real receiver: the replied event's `data` is the 200 body byte for byte."""

import json

import pytest
from pytest_httpserver import HTTPServer

from conversations.agents import openai_agent
from conversations.models import Message
from tests.conftest import SEED_TEXT, Api
from tests.factories import AIAgentFactory, ChannelFactory
from tests.webhooks.conftest import verified
from webhooks.delivery import delivery_attempt
from webhooks.models import WebhookDelivery, WebhookEvent
from webhooks.services import webhook_set


def deliver_all() -> None:
    """What the worker does after commit (the test's transaction never commits, so it is done here)."""
    for delivery in WebhookDelivery.objects.filter(status="PENDING").order_by("created_at"):
        assert delivery_attempt(delivery_id=delivery.pk) is not None


def test_a_reply_is_pushed_with_the_exact_200_body(api, hooked, receiver, django_capture_on_commit_callbacks):
    # given
    channel, secret = hooked

    # when
    with django_capture_on_commit_callbacks() as callbacks:
        response = api.post()
    deliver_all()

    # then: handed to a worker at commit, and the body embeds the response's bytes unchanged
    assert response.status_code == 200
    assert len(callbacks) == 1
    (received,) = receiver.requests
    event = WebhookEvent.objects.get()
    timestamp = json.loads(received.body)["timestamp"].encode()
    assert received.body == b'{"type":"message.replied","timestamp":"%s","data":%s}' % (timestamp, response.content)
    body = verified(received, secret)
    assert body["type"] == "message.replied"
    assert body["data"] == response.json()
    assert received.headers["webhook-id"] == event.pk
    assert (event.channel_id, event.contact_id) == (channel.pk, response.json()["contactId"])


def test_an_idempotent_replay_emits_no_second_event(api, hooked, receiver):
    first = api.post(idempotency_key="replay-1")
    again = api.post(idempotency_key="replay-1")

    assert again["Idempotent-Replayed"] == "true" and again.content == first.content
    assert WebhookEvent.objects.count() == 1


def test_a_channel_without_a_webhook_writes_no_event(api):
    assert api.post().status_code == 200
    assert WebhookEvent.objects.count() == 0


@pytest.fixture
def failing_llm_api(client, workspace, api_key, httpserver: HTTPServer, monkeypatch) -> Api:
    monkeypatch.setattr(openai_agent, "MAX_RETRIES", 0)
    httpserver.expect_request("/v1/chat/completions").respond_with_json({"error": {"message": "down"}}, status=500)
    agent = AIAgentFactory(workspace=workspace, provider="openai", base_url=httpserver.url_for("/v1"), model="m")
    return Api(client, ChannelFactory(workspace=workspace, agent=agent), api_key)


def test_an_agent_failure_is_pushed_as_message_failed_with_the_error_body_and_the_ids(failing_llm_api, receiver):
    # given
    secret = webhook_set(channel_id=failing_llm_api.channel.pk, url=receiver.url)

    # when
    response = failing_llm_api.post({**SEED_TEXT, "contactIdentifier": "failing@example.com"})
    deliver_all()

    # then
    assert response.status_code == 502
    inbound = Message.objects.get(direction="INBOUND")
    (received,) = receiver.requests
    body = verified(received, secret)
    assert body["type"] == "message.failed"
    assert body["data"] == {
        **response.json(),
        "contactId": inbound.conversation.contact_id,
        "conversationId": inbound.conversation_id,
        "messageId": inbound.pk,
    }
    assert body["data"]["error"]["code"] == "agent_unavailable"
    assert WebhookEvent.objects.get().contact_id == inbound.conversation.contact_id
