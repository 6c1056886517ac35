from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models
from django.db.models import Q
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Upper
from django.utils import timezone

from config import ids


class Conversation(models.Model):
    """The thread of one contact on one channel. At most one ACTIVE conversation per channel and contact."""

    class Status(models.TextChoices):
        ACTIVE = "ACTIVE", "Active"
        CLOSED = "CLOSED", "Closed"

    class CloseReason(models.TextChoices):
        INACTIVITY = "inactivity", "Inactivity"
        API = "api", "Closed through the API"
        OPERATOR = "operator", "Closed by an operator"
        AGENT = "agent", "Closed by the agent"

    id = models.CharField(primary_key=True, max_length=40, default=ids.conversation_id, editable=False)
    # No single-column indexes on the three keys: each leads a composite index below (the read API's lists),
    # which serves the same lookups, and every index is written again by each message's two UPDATEs of the row.
    workspace = models.ForeignKey(
        "channels_app.Workspace", on_delete=models.CASCADE, related_name="conversations", db_index=False
    )
    channel = models.ForeignKey(
        "channels_app.Channel", on_delete=models.CASCADE, related_name="conversations", db_index=False
    )
    contact = models.ForeignKey(
        "contacts.Contact", on_delete=models.CASCADE, related_name="conversations", db_index=False
    )
    agent = models.ForeignKey(
        "channels_app.AIAgent",
        on_delete=models.SET_NULL,
        null=True,
        related_name="conversations",
        help_text="The AI agent assigned to the conversation.",
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    # The last `seq` given to an inbound message. It is taken under this row's lock, so a message's position
    # is fixed in commit order and a later message always sees the earlier one (docs/architecture.md, "Order
    # within a conversation").
    last_seq = models.PositiveIntegerField(default=0)
    # The accept phase's `now`, as its first `last_message_at` (conversations.services.conversation_build), not
    # the insert's own later time: a conversation whose only message failed would read last before created.
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_message_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # Set when the conversation is closed (README "Example": `closedAt`, `closeReason`); null while active.
    closed_at = models.DateTimeField(null=True, blank=True)
    close_reason = models.CharField(max_length=20, choices=CloseReason.choices, blank=True)
    # Set when the contact was erased (DELETE /api/v1/contacts/{id}, README "Erasing a contact"): a message
    # of the contact still in flight then records no content here (api.flow.messaging, ContactErased).
    erased_at = models.DateTimeField(null=True, blank=True)
    # Set by the agent's add_conversation_labels action (conversations/labels.py has the limits); the read
    # API filters by one (`?label=`, through conversation_labels, a GIN index).
    labels = models.JSONField(default=list, blank=True)
    # Set by the agent's transfer_to_agent action: the conversation keeps `agent` when the channel's changes.
    agent_transferred = models.BooleanField(default=False)

    class Meta:
        ordering = ["-last_message_at"]
        # The read API's lists, newest first by (last_message_at, id), keyset-paged (conversations/selectors.py):
        # one index per filter it takes, so a page is an index range scan whatever the list's length.
        indexes = [
            models.Index(fields=["workspace", "-last_message_at", "-id"], name="conversation_ws_recent"),
            models.Index(fields=["channel", "-last_message_at", "-id"], name="conversation_channel_recent"),
            models.Index(fields=["contact", "-last_message_at", "-id"], name="conversation_contact_recent"),
            # The inactivity clean-up (api/maintenance/cleanup.py) reads the oldest active conversations only.
            models.Index(fields=["last_message_at"], condition=Q(status="ACTIVE"), name="conversation_active_idle"),
            GinIndex(fields=["labels"], opclasses=["jsonb_path_ops"], name="conversation_labels"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "contact"], condition=Q(status="ACTIVE"), name="conversation_one_active_per_contact"
            ),
        ]
        # Closing is the one change an operator makes to a conversation (the admin's "Close" action).
        permissions = [("close_conversation", "Can close conversations")]

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
        # latest burst mode: a newer message of the conversation arrived before this one was answered, and
        # is answered for it (README "Bursts of short messages").
        SUPERSEDED = "SUPERSEDED", "Superseded by a newer message"
        SENT = "SENT", "Sent"

    id = models.CharField(primary_key=True, max_length=40, default=ids.message_id, editable=False)
    # Indexed by message_unique_position, which leads with it.
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages", db_index=False)
    seq = models.PositiveIntegerField()
    part = models.PositiveSmallIntegerField(default=0)
    direction = models.CharField(max_length=10, choices=Direction.choices)
    type = models.CharField(max_length=10, choices=Type.choices)
    content = models.JSONField()
    # Inbound only: the integrator's flat {key: string} object sent with the message (README "Request body").
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices)
    reply_to = models.ForeignKey(
        "self",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="replies",
        help_text="For an AI message: the contact's message it answers.",
    )
    # Inbound only: until when the request that accepted the message may still answer it. Later messages of
    # the conversation wait for a PENDING message only while this lies in the future.
    lease_until = models.DateTimeField(null=True, blank=True)
    credits_reserved = models.PositiveIntegerField(default=0)
    # latest burst mode: this message answers its burst whatever arrives after it (its burst reached the
    # longest wait, Channel.burst_window_ms's cap); later messages wait for its turn (docs/architecture.md, "Bursts").
    burst_final = models.BooleanField(default=False)
    credits = models.PositiveIntegerField(default=0, help_text="Credits charged for this reply.")
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    error_code = models.CharField(max_length=40, blank=True)
    # Inbound media only: the cached download, and what the bytes turned out to be. The MIME type and size
    # stay on the message after the asset expires and is deleted.
    media_asset = models.ForeignKey(
        "MediaAsset",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="messages",
    )
    media_mime_type = models.CharField(max_length=255, blank=True, help_text="Sniffed from the file's bytes.")
    media_size = models.PositiveIntegerField(null=True, blank=True, help_text="Bytes downloaded.")
    # Inbound only: the messages endpoint's 200 body for this message, the exact bytes it answered (JSON),
    # set in the UPDATE that marks it answered; GET /api/v1/messages/{id} returns it as `result`.
    result = models.BinaryField(null=True, blank=True, editable=False)
    # Inbound only: the actions its turn made (api/flow/actions.py), in order, each with its result and duration;
    # written with the replies in the record phase.
    actions = models.JSONField(default=list, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["conversation", "seq", "part"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq", "part"], name="message_unique_position"),
        ]
        indexes = [
            # The admin's search of a text (conversations/search.py): a trigram index of the expression Django's
            # `icontains` compares (`UPPER(expr::text) LIKE UPPER('%term%')`), so a substring is an index scan.
            GinIndex(
                OpClass(Upper(Cast(KT("content__text__body"), models.TextField())), name="gin_trgm_ops"),
                name="message_text_trgm",
            ),
            # The admin's message list filtered by what failed, newest first: failed messages are few.
            models.Index(fields=["error_code", "id"], condition=Q(status="FAILED"), name="message_failed"),
        ]

    def __str__(self) -> str:
        return self.id


# The message types as the API writes them (the OpenAPI document's one MessageTypeEnum, config/settings).
MESSAGE_TYPES = tuple(Message.Type.values)


class MediaAsset(models.Model):
    """A media file downloaded for a message, kept until `expires_at` (settings.MEDIA_CACHE_SECONDS).

    The same URL sent again by the same workspace before then is served from here, not downloaded again.
    The bytes live in Django's storage under a name derived from their SHA-256, so identical files are
    stored once, whatever URL or workspace they came from; a file is deleted only when no asset row names
    it any more. The cache is per workspace: a hit never confirms what another workspace sent.
    """

    id = models.CharField(primary_key=True, max_length=40, default=ids.media_id, editable=False)
    workspace = models.ForeignKey("channels_app.Workspace", on_delete=models.CASCADE, related_name="media_assets")
    url = models.CharField(max_length=2048, help_text="The URL as the integrator sent it.")
    # The lookup goes by the URL's hash: a 2048-character URL is too long for a B-tree entry on PostgreSQL.
    url_sha256 = models.CharField(max_length=64)
    sha256 = models.CharField(max_length=64, help_text="SHA-256 of the bytes, hex.")
    file = models.FileField(max_length=255, help_text="The stored file's name in Django's storage.")
    mime_type = models.CharField(max_length=255, help_text="Sniffed from the bytes, never the server's header.")
    size = models.PositiveIntegerField(help_text="Bytes.")
    text = models.TextField(blank=True, help_text="A document's text for the agent, bounded.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["workspace", "url_sha256", "expires_at"], name="media_asset_cache_lookup"),
            models.Index(fields=["file"], name="media_asset_file"),
        ]

    def __str__(self) -> str:
        return self.id


def content_body(*, type: str, content: object) -> dict[str, Any]:
    """The type's object inside a message's `content`, e.g. {"url": ..., "caption": ...} for an IMAGE; {} when
    the content holds none (the admin, the exports and the agents read stored messages of any age)."""
    body = content.get(type.lower()) if isinstance(content, dict) else None
    return body if isinstance(body, dict) else {}


class ToolCall(models.Model):
    """One HTTP tool call of a message's turn (api/flow/actions.py), keyed by the message and its position in the
    turn. Stored before the call is made and its result after it: a replay or a retry of the message finds
    a finished call here and reuses its result instead of calling again."""

    class Status(models.TextChoices):
        STARTED = "STARTED", "Started"
        SUCCEEDED = "SUCCEEDED", "Succeeded"
        FAILED = "FAILED", "Failed"

    id = models.CharField(primary_key=True, max_length=40, default=ids.tool_call_id, editable=False)
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="tool_calls", db_index=False)
    position = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=64)
    arguments = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.STARTED)
    result = models.TextField(blank=True, help_text="What went back to the model.")
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["message", "position"]
        constraints = [models.UniqueConstraint(fields=["message", "position"], name="tool_call_unique_position")]

    def __str__(self) -> str:
        return f"{self.name} #{self.position}"


FILENAME_MAX = 255  # the API's limit for `filename`; a URL's last segment is cut to it


def media_filename(*, type: str, content: object) -> str:
    """A media message's file name as the agent is told it, on its own turn and in every later one: the
    request's `filename`, else the URL path's last segment, decoded (what the type check reads an extension
    from when the request names no file)."""
    body = content_body(type=type, content=content)
    filename = str(body.get("filename") or "")
    if filename:
        return filename
    try:
        path = urlsplit(str(body.get("url") or "")).path
    except ValueError:  # media_download refuses such a URL with the contract's error
        return ""
    return PurePosixPath(unquote(path)).name[:FILENAME_MAX]
