"""Webhooks in the back office: the URL editable, the secret never shown, deliveries and attempts read-only
with a "redeliver" action."""

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from tests.webhooks.conftest import Reply
from webhooks.delivery import delivery_attempt
from webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from webhooks.services import event_emit


def url_of(model, view: str, *args) -> str:
    return reverse(f"admin:webhooks_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def attempted(hooked, receiver):
    """A delivery with one failed attempt (500, with a body) and the channel's secret."""
    channel, secret = hooked
    receiver.plan.append(Reply(500, b"<h1>receiver & co broke</h1>"))
    event = event_emit(channel_id=channel.pk, type="conversation.closed", data={"conversation": {"id": "cv_x"}})
    delivery = event.deliveries.get()
    delivery_attempt(delivery_id=delivery.pk)
    return delivery, secret


def test_a_webhook_is_added_in_the_admin_and_its_secret_never_shown(admin_client, channel, receiver):
    # when
    response = admin_client.post(
        url_of(WebhookEndpoint, "add"), {"channel": channel.pk, "url": receiver.url}, follow=True
    )

    # then
    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get(channel=channel)
    assert endpoint.url == receiver.url and endpoint.secret_encrypted
    assert f"manage.py webhook secret {channel.pk}" in response.content.decode()
    assert "whsec_" not in response.content.decode()


def test_the_webhook_page_never_shows_the_secret(admin_client, hooked):
    channel, secret = hooked

    for url in (url_of(WebhookEndpoint, "change", channel.pk), url_of(WebhookEndpoint, "changelist")):
        html = admin_client.get(url).content.decode()
        assert secret not in html and secret.removeprefix("whsec_")[:16] not in html
        assert "secret_encrypted" not in html


def test_the_admin_refuses_a_url_that_breaks_the_address_rules(admin_client, channel, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = []

    response = admin_client.post(url_of(WebhookEndpoint, "add"), {"channel": channel.pk, "url": "http://10.0.0.7/h"})

    assert response.status_code == 200
    assert "private, local or reserved network address" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_editing_the_url_keeps_the_secret(admin_client, hooked, receiver):
    channel, _ = hooked
    before = bytes(WebhookEndpoint.objects.get(channel=channel).secret_encrypted)

    response = admin_client.post(url_of(WebhookEndpoint, "change", channel.pk), {"url": receiver.url + "/v2"})

    assert response.status_code == 302
    endpoint = WebhookEndpoint.objects.get(channel=channel)
    assert (endpoint.url, bytes(endpoint.secret_encrypted)) == (receiver.url + "/v2", before)


def test_a_delivery_page_shows_its_attempts(admin_client, attempted):
    delivery, _ = attempted

    listing = admin_client.get(url_of(WebhookDelivery, "changelist")).content.decode()
    page = admin_client.get(url_of(WebhookDelivery, "change", delivery.pk)).content.decode()
    event_page = admin_client.get(url_of(WebhookEvent, "change", delivery.event_id)).content.decode()

    assert delivery.pk in listing and "PENDING" in listing
    assert "500" in page and "Not 2xx" in page
    assert "&lt;h1&gt;receiver &amp; co broke&lt;/h1&gt;" in page  # escaped, never rendered
    assert delivery.event_id in page
    assert "cv_x" in event_page and delivery.pk in event_page


@pytest.mark.parametrize("model", [WebhookEvent, WebhookDelivery])
def test_events_and_deliveries_are_read_only_even_for_a_superuser(admin_client, attempted, model):
    delivery, _ = attempted
    pk = delivery.pk if model is WebhookDelivery else delivery.event_id

    assert admin_client.get(url_of(model, "add")).status_code == 403
    assert admin_client.get(url_of(model, "delete", pk)).status_code == 403
    page = admin_client.get(url_of(model, "change", pk)).content.decode()
    assert 'name="_save"' not in page


def test_redeliver_sends_the_event_again_with_the_same_webhook_id(admin_client, hooked, receiver):
    # given: a delivered event
    channel, _ = hooked
    event = event_emit(channel_id=channel.pk, type="conversation.closed", data={"conversation": {}})
    first = event.deliveries.get()
    delivery_attempt(delivery_id=first.pk)

    # when
    response = admin_client.post(
        url_of(WebhookDelivery, "changelist"), {"action": "redeliver", "_selected_action": [first.pk]}, follow=True
    )

    # then: a new delivery of the same event, due now
    assert "1 deliveries scheduled now" in response.content.decode()
    again = WebhookDelivery.objects.exclude(pk=first.pk).get()
    assert (again.event_id, again.status, again.attempts) == (event.pk, "PENDING", 0)
    delivery_attempt(delivery_id=again.pk)
    assert [r.headers["webhook-id"] for r in receiver.requests] == [event.pk, event.pk]


def test_redeliver_needs_the_permission_to_change_webhooks(client, attempted):
    # given: an operator who may only look at deliveries
    delivery, _ = attempted
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_webhookdelivery"))
    client.force_login(viewer)

    # when
    listing = client.get(url_of(WebhookDelivery, "changelist")).content.decode()
    client.post(url_of(WebhookDelivery, "changelist"), {"action": "redeliver", "_selected_action": [delivery.pk]})

    # then
    assert 'value="redeliver"' not in listing
    assert WebhookDelivery.objects.count() == 1
