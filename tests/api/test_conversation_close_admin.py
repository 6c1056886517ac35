"""Operators close conversations in the admin (reason `operator`, announced like any close); the lists show and
filter the status and the close reason."""

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from conversations.models import Conversation
from tests.history import conversation_with_exchanges
from webhooks.models import WebhookEvent
from webhooks.services import webhook_set

CHANGELIST = "admin:conversations_conversation_changelist"


@pytest.fixture
def two(channel, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = ["127.0.0.1"]
    webhook_set(channel_id=channel.pk, url="http://127.0.0.1:9/hook")
    first = conversation_with_exchanges(channel=channel).conversation
    second = conversation_with_exchanges(channel=channel, identifier="grace@example.com").conversation
    return first, second


def test_an_operator_closes_conversations_and_each_close_is_announced_once(admin_client, two):
    first, second = two
    Conversation.objects.filter(pk=second.pk).update(status="CLOSED", close_reason="api")

    # when: both are selected, one of them already closed
    response = admin_client.post(
        reverse(CHANGELIST), {"action": "close", "_selected_action": [first.pk, second.pk]}, follow=True
    )

    # then
    assert "1 conversations closed" in response.content.decode()
    first.refresh_from_db()
    assert (first.status, first.close_reason) == ("CLOSED", "operator") and first.closed_at is not None
    assert Conversation.objects.get(pk=second.pk).close_reason == "api"
    (event,) = [json.loads(p) for p in WebhookEvent.objects.values_list("payload", flat=True)]
    assert event["type"] == "conversation.closed"
    assert (event["data"]["conversation"]["id"], event["data"]["conversation"]["closeReason"]) == (first.pk, "operator")


def test_the_list_shows_and_filters_the_status_and_close_reason(admin_client, two):
    first, second = two
    Conversation.objects.filter(pk=second.pk).update(status="CLOSED", close_reason="inactivity")

    listing = admin_client.get(reverse(CHANGELIST)).content.decode()
    by_reason = admin_client.get(reverse(CHANGELIST), {"close_reason__exact": "inactivity"}).content.decode()

    assert "Closed (Inactivity)" in listing  # the status column says why
    assert "close_reason__exact=inactivity" in listing and "closed_at__gte" in listing  # the filters
    assert second.pk in by_reason and first.pk not in by_reason


def test_closing_needs_the_close_permission(client, two):
    first, _ = two
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_conversation"))
    client.force_login(viewer)

    listing = client.get(reverse(CHANGELIST)).content.decode()
    client.post(reverse(CHANGELIST), {"action": "close", "_selected_action": [first.pk]})

    assert 'value="close"' not in listing
    assert Conversation.objects.get(pk=first.pk).status == "ACTIVE"

    # and with it, the action is there
    viewer.user_permissions.add(Permission.objects.get(codename="close_conversation"))
    client.post(reverse(CHANGELIST), {"action": "close", "_selected_action": [first.pk]})
    assert Conversation.objects.get(pk=first.pk).status == "CLOSED"


def test_a_channel_s_inactivity_timeout_is_set_in_the_admin(admin_client, channel):
    from channels_app.models import Channel

    url = reverse("admin:channels_app_channel_change", args=[channel.pk])
    data = {"name": channel.name, "type": "API", "is_active": "on", "agent": channel.agent_id}

    assert "inactivity_timeout_seconds" in admin_client.get(url).content.decode()
    assert admin_client.post(url, {**data, "inactivity_timeout_seconds": "0"}).status_code == 302
    assert Channel.objects.get(pk=channel.pk).inactivity_timeout_seconds == 0
    assert admin_client.post(url, {**data, "inactivity_timeout_seconds": "-1"}).status_code == 200  # refused
    assert admin_client.post(url, data).status_code == 302  # left out: the default
    assert Channel.objects.get(pk=channel.pk).inactivity_timeout_seconds == 86400


def test_the_conversation_page_leaves_by_back_to_conversations_not_a_second_close(admin_client, channel):
    conversation = conversation_with_exchanges(channel=channel).conversation

    page = admin_client.get(reverse("admin:conversations_conversation_change", args=[conversation.pk])).content.decode()

    # the only "Close" an operator meets is the list's action, which closes conversations
    assert f'<a href="{reverse(CHANGELIST)}" class="closelink">Back to conversations</a>' in page
    assert ">Close<" not in page
