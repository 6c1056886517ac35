"""A channel's webhook and the outbox of its events (README "Webhooks").

An event and its delivery are written in the transaction that produced the event (the record phase, the
failure path, a conversation's close), so a committed event is never lost; delivery attempts happen later,
outside any transaction, and each one is kept for operators.
"""

from django.db import models
from django.db.models import Q

from config import ids


def webhook_event_id() -> str:
    return ids.new_id("evt")  # sent as `webhook-id`: the same on every attempt and every redelivery


def webhook_delivery_id() -> str:
    return ids.new_id("whd")


class WebhookEndpoint(models.Model):
    """Where a channel's events go, and the key they are signed with.

    The signing secret (`whsec_` + base64) must be readable to sign, so it cannot be hashed like an API key;
    it is stored encrypted with a key derived from SECRET_KEY (webhooks/secrets.py), so a copy of the
    database alone does not let anyone sign events. It is printed once by `manage.py webhook set` or
    `webhook secret`, and never shown again.
    """

    channel = models.OneToOneField(
        "channels_app.Channel", on_delete=models.CASCADE, primary_key=True, related_name="webhook"
    )
    # Not a URLField: Django's URL validator refuses host names without a dot (a receiver in the same
    # private network); webhooks.address.webhook_url_check applies the address rules instead.
    url = models.CharField("webhook URL", max_length=2048)
    secret_encrypted = models.BinaryField(editable=False)
    secret_set_at = models.DateTimeField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "webhook"

    def __str__(self) -> str:
        return self.url


class WebhookEvent(models.Model):
    """One event of a channel: `payload` is the exact body every attempt sends."""

    class Type(models.TextChoices):
        MESSAGE_REPLIED = "message.replied", "message.replied"
        MESSAGE_FAILED = "message.failed", "message.failed"
        CONVERSATION_CLOSED = "conversation.closed", "conversation.closed"

    id = models.CharField(primary_key=True, max_length=40, default=webhook_event_id, editable=False)
    workspace = models.ForeignKey("channels_app.Workspace", on_delete=models.CASCADE, related_name="+")
    channel = models.ForeignKey("channels_app.Channel", on_delete=models.CASCADE, related_name="webhook_events")
    # The contact the event is about (the payload names it too), so erasing a contact can find its events.
    contact_id = models.CharField(max_length=40, blank=True, db_index=True)
    type = models.CharField(max_length=40, choices=Type.choices)
    payload = models.TextField()
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.type} {self.id}"


class WebhookDelivery(models.Model):
    """The sending of one event to the channel's webhook: PENDING until an attempt gets a 2xx (SUCCEEDED)
    or the retry schedule is exhausted (FAILED).

    A worker claims a due delivery with a conditional UPDATE of `lease_owner`/`lease_until` (one short
    transaction), sends outside any transaction, then records the attempt and releases the lease only if it
    still owns it: two workers never send the same attempt, and a worker that dies mid-way leaves a lease
    that runs out and a delivery the next sweep takes up again.
    """

    class Status(models.TextChoices):
        PENDING = "PENDING", "Pending"
        SUCCEEDED = "SUCCEEDED", "Succeeded"
        FAILED = "FAILED", "Failed (retries exhausted)"

    id = models.CharField(primary_key=True, max_length=40, default=webhook_delivery_id, editable=False)
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=40, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_outcome = models.CharField(max_length=40, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["-created_at"]
        indexes = [
            # The sweep's query: pending deliveries by when they are due. Only pending rows are indexed, so
            # the index stays as small as the backlog however long history grows.
            models.Index(fields=["next_attempt_at"], condition=Q(status="PENDING"), name="webhook_delivery_due"),
        ]

    def __str__(self) -> str:
        return self.id


class WebhookAttempt(models.Model):
    """One POST of a delivery: what was sent where, and what came back (bounded)."""

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded", "2xx"
        HTTP_STATUS = "http_status", "Not 2xx"
        REDIRECT = "redirect", "Redirect (not followed)"
        TIMEOUT = "timeout", "No answer in time"
        CONNECTION_FAILED = "connection_failed", "Connection failed"
        DNS_FAILED = "dns_failed", "Host name not resolved"
        TLS_FAILED = "tls_failed", "TLS failed"
        ADDRESS_REFUSED = "address_refused", "Non-public address refused"
        INVALID_URL = "invalid_url", "URL not allowed"
        NO_WEBHOOK = "no_webhook", "The channel has no webhook"
        SECRET_UNREADABLE = "secret_unreadable", "Signing secret unreadable"

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_set")
    number = models.PositiveIntegerField()
    url = models.CharField(max_length=2048, blank=True)
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=40, choices=Outcome.choices)
    response_excerpt = models.TextField(blank=True)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempt_unique_number")]

    def __str__(self) -> str:
        return f"attempt {self.number}"
