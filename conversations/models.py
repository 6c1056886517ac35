from django.db import models
from django.db.models import Q

from config import ids


class Conversation(models.Model):
    """The thread of one contact on one channel. At most one OPEN conversation per channel and contact."""

    class Status(models.TextChoices):
        OPEN = "OPEN", "Open"
        CLOSED = "CLOSED", "Closed"

    id = models.CharField(primary_key=True, max_length=40, default=ids.conversation_id, editable=False)
    workspace = models.ForeignKey("channels_app.Workspace", on_delete=models.CASCADE, related_name="conversations")
    channel = models.ForeignKey("channels_app.Channel", on_delete=models.CASCADE, related_name="conversations")
    contact = models.ForeignKey("contacts.Contact", on_delete=models.CASCADE, related_name="conversations")
    agent = models.ForeignKey(
        "channels_app.AIAgent", on_delete=models.SET_NULL, null=True, related_name="conversations",
        help_text="The AI agent assigned to the conversation.",
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    # The last `seq` given to an inbound message. It is taken under this row's lock, so a message's position
    # is fixed in commit order and a later message always sees the earlier one (DESIGN.md: answered in order).
    last_seq = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    last_message_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-last_message_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "contact"], condition=Q(status="OPEN"), name="conversation_one_open_per_contact"
            ),
        ]

    def __str__(self) -> str:
        return self.id


class Message(models.Model):
    """One message of a conversation, in order by (`seq`, `part`).

    An inbound message takes the next `seq` of its conversation (part 0); the agent's replies to it share
    that `seq` with parts 1, 2, ... So the transcript reads question, answers, question, answers, and
    storing a reply needs no new position from the conversation row.
    """

    class Direction(models.TextChoices):
        INBOUND = "INBOUND", "From the contact"
        OUTBOUND = "OUTBOUND", "From the AI agent"

    class Type(models.TextChoices):
        TEXT = "TEXT", "Text"
        IMAGE = "IMAGE", "Image"
        AUDIO = "AUDIO", "Audio"
        VIDEO = "VIDEO", "Video"
        DOCUMENT = "DOCUMENT", "Document"

    class Status(models.TextChoices):
        PENDING = "PENDING", "Waiting for the agent"
        ANSWERED = "ANSWERED", "Answered"
        FAILED = "FAILED", "Agent failed"
        SENT = "SENT", "Sent"

    id = models.CharField(primary_key=True, max_length=40, default=ids.message_id, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    seq = models.PositiveIntegerField()
    part = models.PositiveSmallIntegerField(default=0)
    direction = models.CharField(max_length=10, choices=Direction.choices)
    type = models.CharField(max_length=10, choices=Type.choices)
    content = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices)
    reply_to = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="replies",
        help_text="For an AI message: the contact's message it answers.",
    )
    # Inbound only: until when the request that accepted the message may still answer it. Later messages of
    # the conversation wait for a PENDING message only while this lies in the future.
    lease_until = models.DateTimeField(null=True, blank=True)
    credits_reserved = models.PositiveIntegerField(default=0)
    credits = models.PositiveIntegerField(default=0, help_text="Credits charged for this reply.")
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    error_code = models.CharField(max_length=40, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["conversation", "seq", "part"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq", "part"], name="message_unique_position"),
        ]

    def __str__(self) -> str:
        return self.id
