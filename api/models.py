"""The HTTP edge's own table: the idempotency keys clients send, with the response to replay. A record
points at the inbound message it stored, so it sits above conversations."""

from django.db import models

from channels_app.models import Workspace
from config import ids


class IdempotencyRecord(models.Model):
    """A claimed `X-Idempotency-Key`, scoped to one workspace.

    IN_PROGRESS with `locked_until` in the future: a request owns it. RELEASED: the last attempt failed
    with a 5xx and a retry may run again, reusing `message`. COMPLETED: `response_body` replays byte for byte.
    """

    class State(models.TextChoices):
        IN_PROGRESS = "IN_PROGRESS", "In progress"
        RELEASED = "RELEASED", "Released after a failure"
        COMPLETED = "COMPLETED", "Completed"

    id = models.CharField(primary_key=True, max_length=40, default=ids.idempotency_id, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="idempotency_records")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=20, choices=State.choices, default=State.IN_PROGRESS)
    owner = models.CharField(max_length=40, blank=True, help_text="The attempt that holds the lock.")
    locked_until = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(db_index=True)
    message = models.ForeignKey(
        "conversations.Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.BinaryField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # The table keeps the name it had when the record lived in channels_app (api/migrations/0001).
        db_table = "channels_app_idempotencyrecord"
        constraints = [models.UniqueConstraint(fields=["workspace", "key"], name="idempotency_unique_key")]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.key
