"""The conversation history in the admin: read-only for everyone (config.admin_base.ReadOnlyAdminMixin).

A conversation's page shows its transcript like a chat (templates/admin/conversations/conversation/
change_form.html). A media message links to the URL the integrator sent, with the MIME type and size the
media pipeline recorded on the message (they outlive the cached MediaAsset), and to the asset while it exists.
"""

import json
from dataclasses import dataclass, field

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from config.admin_base import HistoryAdmin
from conversations.failures import CAUSES, OTHER, codes_of, failure_cause, known_codes
from conversations.models import Conversation, MediaAsset, Message, content_body
from conversations.search import SEARCH_MIN_CHARS, message_search_q

TRANSCRIPT_MAX_MESSAGES = 200  # the page stays light for a long conversation; the messages list has them all
_MEDIA_TYPES = {Message.Type.IMAGE, Message.Type.AUDIO, Message.Type.VIDEO, Message.Type.DOCUMENT}


@dataclass
class TranscriptMedia:
    url: str
    linkable: bool  # only http(s) URLs become links: anything else (javascript:, data:) is shown as text
    caption: str
    filename: str
    mime_type: str
    size: int | None
    asset_url: str  # the cached download's admin page, while it is kept


@dataclass
class TranscriptEntry:
    message: Message
    from_contact: bool
    text: str
    media: TranscriptMedia | None
    credits: int | None  # set on the first part of a reply: what answering the contact's message cost
    admin_url: str
    metadata: list[tuple[str, str]]  # the integrator's `metadata` of an inbound message, as sent
    # An inbound message's turn: each action with its arguments, result and duration (api/flow/actions.py)
    actions: list[dict[str, str]] = field(default_factory=list)


def _media_of(message: Message) -> TranscriptMedia | None:
    body = content_body(type=message.type, content=message.content)
    url = body.get("url")
    if message.type not in _MEDIA_TYPES or not isinstance(url, str):
        return None
    return TranscriptMedia(
        url=url,
        linkable=url.lower().startswith(("http://", "https://")),
        caption=str(body.get("caption") or ""),
        filename=str(body.get("filename") or ""),
        mime_type=message.media_mime_type,
        size=message.media_size,
        asset_url=reverse("admin:conversations_mediaasset_change", args=[quote(message.media_asset_id)])
        if message.media_asset_id
        else "",
    )


def _metadata_of(message: Message) -> list[tuple[str, str]]:
    metadata = message.metadata if isinstance(message.metadata, dict) else {}
    return [(str(key), str(value)) for key, value in metadata.items()]


def transcript_entries(
    *, conversation: Conversation, limit: int = TRANSCRIPT_MAX_MESSAGES
) -> tuple[list[TranscriptEntry], bool]:
    """The conversation's last `limit` messages in (seq, part) order, and whether earlier ones were left out.

    One query on the (conversation, seq, part) unique index, read backwards, so a long conversation costs
    no more than a short one.
    """
    rows = list(Message.objects.filter(conversation=conversation).order_by("-seq", "-part")[: limit + 1])
    truncated = len(rows) > limit
    rows = rows[:limit]
    rows.reverse()
    entries = []
    for message in rows:
        from_contact = message.direction == Message.Direction.INBOUND
        is_first_reply_part = not from_contact and message.part == 1
        body = content_body(type=message.type, content=message.content)
        entries.append(
            TranscriptEntry(
                message=message,
                from_contact=from_contact,
                text=str(body.get("body") or "") if message.type == Message.Type.TEXT else "",
                media=_media_of(message),
                credits=message.credits if is_first_reply_part or message.credits else None,
                admin_url=reverse("admin:conversations_message_change", args=[quote(message.pk)]),
                metadata=_metadata_of(message),
                actions=_actions_of(message),
            )
        )
    return entries, truncated


def _actions_of(message: Message) -> list[dict[str, str]]:
    """The turn's actions as the transcript shows them: every value as text (arguments as JSON)."""
    actions = message.actions if isinstance(message.actions, list) else []
    return [
        {
            "name": str(action.get("name", "")),
            "type": str(action.get("type", "")),
            "status": str(action.get("status", "")),
            "arguments": json.dumps(action.get("arguments", {}), ensure_ascii=False),
            "result": str(action.get("result", "")),
            "duration_ms": str(action.get("durationMs", "")),
        }
        for action in actions
        if isinstance(action, dict)
    ]


def message_admin_link(message_id: str | None) -> str:
    """A link to the message's read-only page, or "-" (for the ledger's and idempotency records' pages)."""
    if not message_id:
        return "-"
    url = reverse("admin:conversations_message_change", args=[quote(message_id)])
    return format_html('<a href="{}">{}</a>', url, message_id)


def outcome_label(message: Message) -> str:
    """A message's status as an operator reads it: a failure says what failed (conversations.failures)."""
    if message.status == Message.Status.FAILED:
        return f"Failed: {failure_cause(message.error_code).label}"
    return message.get_status_display()


class OutcomeFilter(admin.SimpleListFilter):
    """Status, with failures split by what failed (the model's FAILED label says "Agent failed" for a
    media failure too)."""

    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request, model_admin):
        return [
            ("answered", "Answered"),
            ("pending", "Waiting for the agent"),
            ("failed", "Failed (any cause)"),
            *((f"failed-{cause.key}", f"Failed: {cause.label}") for cause in CAUSES),
            ("sent", "Sent by the AI agent"),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        simple = {"answered": Message.Status.ANSWERED, "pending": Message.Status.PENDING, "sent": Message.Status.SENT}
        if value in simple:
            return queryset.filter(status=simple[value])
        if value == "failed":
            return queryset.filter(status=Message.Status.FAILED)
        for cause in CAUSES:
            if value == f"failed-{cause.key}":
                failed = queryset.filter(status=Message.Status.FAILED)
                if cause == OTHER:
                    return failed.exclude(error_code__in=known_codes())
                return failed.filter(error_code__in=codes_of(cause))
        return queryset


class ErrorCodeFilter(admin.SimpleListFilter):
    """A failed message's code (the dashboard's failures link here); the codes are a fixed list, so the
    filter costs no query."""

    title = "error code"
    parameter_name = "error_code"

    def lookups(self, request, model_admin):
        return [(code, code) for code in known_codes()]

    def queryset(self, request, queryset):
        value = self.value()
        if value:
            return queryset.filter(status=Message.Status.FAILED, error_code=value)
        return queryset


class LabelFilter(admin.SimpleListFilter):
    """Conversations with one label (the agent's add_conversation_labels); the labels of the latest
    conversations are offered, the `label` parameter takes any (the dashboard links here)."""

    title = "label"
    parameter_name = "label"

    def lookups(self, request, model_admin):
        recent = Conversation.objects.exclude(labels=[]).order_by("-last_message_at").values_list("labels", flat=True)
        seen: dict[str, None] = {}
        for labels in recent[:200]:
            for label in labels or []:
                seen.setdefault(str(label), None)
        return [(label, label) for label in sorted(seen)[:50]]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(labels__contains=[value]) if value else queryset


@admin.register(Conversation)
class ConversationAdmin(HistoryAdmin):
    # The contact by identifier, and status and last message in the first columns: what operators read
    # first and what must fit 1400 px. The id is on the page (and searchable); the close action and the
    # life-cycle fields (closed at, reason) take their place beside status.
    list_display = ["contact_display", "status_display", "last_message_at", "channel", "agent", "message_count"]
    list_display_links = ["contact_display"]
    list_select_related = ["contact", "channel", "workspace", "agent"]
    list_filter = [
        "status",
        "close_reason",
        LabelFilter,
        "workspace",
        "channel__type",
        "last_message_at",
        "closed_at",
    ]
    search_fields = ["=id", "=contact__id", "contact__identifier", "contact__name"]
    fields = readonly_fields = (
        "id",
        "workspace",
        "channel",
        "contact",
        "agent",
        "agent_transferred",
        "labels",
        "status",
        "last_seq",
        "created_at",
        "last_message_at",
        "closed_at",
        "close_reason",
        "messages_link",
    )

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("contact", "channel", "workspace", "agent")

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: Conversation) -> str:
        # One column for the status and, once closed, why: the list must fit 1400 px.
        if obj.status == Conversation.Status.CLOSED and obj.close_reason:
            return f"{obj.get_status_display()} ({obj.get_close_reason_display()})"
        return obj.get_status_display()

    @admin.display(description="contact", ordering="contact__identifier")
    def contact_display(self, obj: Conversation) -> str:
        return str(obj.contact)

    @admin.display(description="messages", ordering="last_seq")
    def message_count(self, obj: Conversation) -> int:
        # The contact's messages: `last_seq` is the last position given, one per inbound message.
        return obj.last_seq

    @admin.display(description="messages")
    def messages_link(self, obj: Conversation) -> str:
        url = reverse("admin:conversations_message_changelist")
        return format_html('<a href="{}?conversation__id__exact={}">All messages of this conversation</a>', url, obj.pk)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            entries, truncated = transcript_entries(conversation=obj)
            context.update(
                {
                    "transcript": entries,
                    "transcript_truncated": truncated,
                    "transcript_limit": TRANSCRIPT_MAX_MESSAGES,
                    "transcript_messages_url": reverse("admin:conversations_message_changelist")
                    + f"?conversation__id__exact={obj.pk}",
                }
            )
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)


@admin.register(Message)
class MessageAdmin(HistoryAdmin):
    # What an operator reads first, fitting 1400 px: when, who (the contact's identifier), which way, the
    # text (a media message's starts with its type), the outcome (a failure says what failed), the cost, the
    # position in its conversation. Ids, seq and part are on the message's page; the type is a filter.
    list_display = [
        "created",
        "contact",
        "direction_display",
        "preview",
        "outcome",
        "credits",
        "position",
    ]
    list_display_links = ["created"]
    list_select_related = ["conversation__contact"]
    list_filter = ["direction", "type", OutcomeFilter, ErrorCodeFilter, "created_at"]
    # Ids are ULIDs: the primary key's index gives newest first without sorting (or joining) the table.
    ordering = ["-id"]
    search_fields = ["=id"]  # shows the search box; get_search_results does the searching
    search_help_text = (
        "A message, conversation or reply id; words of a text message; or (part of) a contact's identifier. "
        f"Under {SEARCH_MIN_CHARS} characters, an identifier must match exactly."
    )
    fields = readonly_fields = (
        "id",
        "conversation",
        "contact",
        "seq",
        "part",
        "direction",
        "type",
        "content",
        "metadata",
        "media_asset",
        "media_mime_type",
        "media_size",
        "outcome",
        "reply_to",
        "credits",
        "credits_reserved",
        "input_tokens",
        "output_tokens",
        "error_code",
        "lease_until",
        "created_at",
    )

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("conversation__contact", "reply_to", "media_asset")

    def get_search_results(self, request, queryset, search_term):
        """conversations.search: every branch on an index (trigram indexes on PostgreSQL)."""
        if not search_term.strip():
            return queryset, False
        return queryset.filter(message_search_q(term=search_term)), False

    @admin.display(description="created", ordering="id")
    def created(self, obj: Message) -> str:
        return obj.created_at.strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description="contact")
    def contact(self, obj: Message) -> str:
        return str(obj.conversation.contact)

    @admin.display(description="from", ordering="direction")
    def direction_display(self, obj: Message) -> str:
        return "contact" if obj.direction == Message.Direction.INBOUND else "agent"

    @admin.display(description="status", ordering="status")
    def outcome(self, obj: Message) -> str:
        if obj.status == Message.Status.FAILED:
            return format_html(
                '<span class="failed" title="{}">{}</span>', obj.error_code or "no code", outcome_label(obj)
            )
        return outcome_label(obj)

    @admin.display(description="#")
    def position(self, obj: Message) -> str:
        url = reverse("admin:conversations_conversation_change", args=[quote(obj.conversation_id)])
        return format_html('<a href="{}#transcript" title="The conversation">{}.{}</a>', url, obj.seq, obj.part)

    @admin.display(description="content")
    def preview(self, obj: Message) -> str:
        if obj.type == Message.Type.TEXT:
            return Truncator(str(content_body(type=obj.type, content=obj.content).get("body") or "")).chars(80)
        media = _media_of(obj)
        label = obj.get_type_display()
        if media is None:
            return f"[{label}]"
        return Truncator(f"[{label}] {media.caption or media.filename or media.url}").chars(80)


@admin.register(MediaAsset)
class MediaAssetAdmin(HistoryAdmin):
    list_display = ["id", "workspace", "mime_type", "size_display", "url", "created_at", "expires_at"]
    list_select_related = ["workspace"]
    list_filter = ["workspace", "created_at", "expires_at"]
    search_fields = ["=id", "=sha256", "url"]
    # Ids are ULIDs, so the primary key's index gives creation order without sorting the table.
    ordering = ["-id"]
    fields = readonly_fields = (
        "id",
        "workspace",
        "url",
        "mime_type",
        "size_display",
        "sha256",
        "stored_as",
        "text",
        "messages_link",
        "created_at",
        "expires_at",
    )

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("workspace")

    @admin.display(description="size", ordering="size")
    def size_display(self, obj: MediaAsset) -> str:
        return filesizeformat(obj.size)

    @admin.display(description="stored as")
    def stored_as(self, obj: MediaAsset) -> str:
        # The name in Django's storage, as text: the media folder is not served over HTTP.
        return obj.file.name

    @admin.display(description="messages")
    def messages_link(self, obj: MediaAsset) -> str:
        url = reverse("admin:conversations_message_changelist")
        return format_html('<a href="{}?media_asset__id__exact={}">Messages with this file</a>', url, obj.pk)
