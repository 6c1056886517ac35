"""The messages endpoint's request body and its 200 body. JSON is camelCase on the wire (the spec's), with
Blubash's snake_case names where its clients read them; `source=` maps both to Python's snake_case.

The 200 body has one definition: the output serializers below. `api.flow.messaging` renders them from
the plain dataclasses (once: the same bytes are stored for idempotent replays), and drf-spectacular
documents them (api.edge.schema), so the OpenAPI document cannot drift from what is sent.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from django.core.validators import URLValidator
from rest_framework import serializers

from channels_app.validators import BUILTIN_ACTIONS, HTTP_TOOL_ACTION
from conversations.models import FILENAME_MAX, MESSAGE_TYPES

# Documented limits (README "Request body"). An e-mail address is at most 320 characters (RFC 3696 errata).
CONTACT_IDENTIFIER_MAX = 320
CONTACT_NAME_MAX = 200
TEXT_BODY_MAX = 4096  # WhatsApp's limit for a text message; long enough for any chat turn
CAPTION_MAX = 1024
URL_MAX = 2048
# `metadata`: small enough to travel with every message into the agent's prompt, large enough for ids,
# a plan name, a page URL or a locale.
METADATA_MAX_KEYS = 16
METADATA_KEY_MAX = 64
METADATA_VALUE_MAX = 512


class _FieldsBuiltOnce(serializers.Serializer):
    """A serializer whose fields its class builds once, for all its instances.

    DRF builds them again for every instance: a deep copy of the declared fields, each one constructed
    anew, nested serializers and their fields too. On the messages endpoint that was nearly all of the
    cost of checking the body, about 0.2 ms of CPU per message. Checking keeps nothing in the fields: the
    instance holds the data, the errors and the result. So the instances share one set. (Rendering an
    answer needs no instance per request at all: `represent`.)
    Only for serializers whose fields need no context (no request, no `partial`): a shared field's `root`
    is the instance that built it.
    """

    @property  # type: ignore[override]
    def fields(self):
        built = type(self).__dict__.get("_built_fields")
        if built is None:
            built = super().fields
            type(self)._built_fields = built  # type: ignore[attr-defined]
        return built


class _StrictObject(_FieldsBuiltOnce):
    """Refuses keys it does not know, so a typo ("caption " or "bdy") is an error and not silently lost.
    `null` for an optional field is the field left out (README "Request body")."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {key: [f"Unknown field. Allowed: {', '.join(sorted(self.fields))}."] for key in unknown}
                )
            data = {key: value for key, value in data.items() if value is not None or self.fields[key].required}
        return super().to_internal_value(data)


class _StringField(serializers.CharField):
    """A JSON string, nothing else: DRF's CharField would turn 42 or true into "42" and "True". A required
    one must hold more than whitespace, also where it is kept as sent (`trim_whitespace=False`)."""

    default_error_messages = {"not_a_string": "Send a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        value = super().to_internal_value(data)
        if not self.allow_blank and not value.strip():
            self.fail("blank")
        return value


def _text(max_length: int, *, required: bool = True, trim: bool = True, **kwargs: Any) -> serializers.CharField:
    return _StringField(
        max_length=max_length,
        required=required,
        allow_blank=not required,
        allow_null=not required,  # null = absent (_StrictObject drops it)
        trim_whitespace=trim,
        **kwargs,
    )


class _PublicUrlField(_StringField):
    default_error_messages = {"invalid": "Send an absolute http:// or https:// URL that anyone can download."}

    def __init__(self, **kwargs):
        super().__init__(max_length=URL_MAX, **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        try:
            URLValidator(schemes=["http", "https"])(value)
        except Exception:
            self.fail("invalid")
        return value


class _MetadataField(serializers.Field):
    """A flat JSON object: at most METADATA_MAX_KEYS keys of 1 to METADATA_KEY_MAX characters, each value a
    string of at most METADATA_VALUE_MAX characters. Errors name the key. Null characters are refused like
    everywhere else (PostgreSQL's JSON cannot store them)."""

    default_error_messages = {
        "not_an_object": 'Send a flat JSON object of string values, e.g. {{"orderId": "A-1001"}}.',
        "too_many": f"Send at most {METADATA_MAX_KEYS} keys; this object has {{count}}.",
        "empty_key": f"A key is empty. Send keys of 1 to {METADATA_KEY_MAX} characters.",
    }

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("not_an_object")
        if len(data) > METADATA_MAX_KEYS:
            self.fail("too_many", count=len(data))
        if "" in data:
            self.fail("empty_key")
        errors = {}
        for key, value in data.items():
            if len(key) > METADATA_KEY_MAX:
                errors[key] = f"The key is {len(key)} characters long. Send keys of 1 to {METADATA_KEY_MAX} characters."
            elif not isinstance(value, str):
                errors[key] = (
                    f"Send a string of at most {METADATA_VALUE_MAX} characters; numbers, booleans, null, objects "
                    "and lists are not accepted."
                )
            elif len(value) > METADATA_VALUE_MAX:
                errors[key] = f"The value is {len(value)} characters long. Send at most {METADATA_VALUE_MAX}."
            elif "\x00" in key or "\x00" in value:
                errors[key] = "Null characters are not allowed."
        if errors:
            raise serializers.ValidationError(errors)
        return dict(data)

    def to_representation(self, value):
        return value


class TextContent(_StrictObject):
    # Kept as sent, leading and trailing whitespace included (indentation, a signature's line breaks).
    body = _text(TEXT_BODY_MAX, trim=False)


class ImageContent(_StrictObject):
    url = _PublicUrlField()
    caption = _text(CAPTION_MAX, required=False)


class AudioContent(_StrictObject):
    url = _PublicUrlField()


class VideoContent(_StrictObject):
    url = _PublicUrlField()
    caption = _text(CAPTION_MAX, required=False)


class DocumentContent(_StrictObject):
    url = _PublicUrlField()
    filename = _text(FILENAME_MAX, required=False)
    caption = _text(CAPTION_MAX, required=False)


CONTENT_SERIALIZERS = {
    "TEXT": ("text", TextContent),
    "IMAGE": ("image", ImageContent),
    "AUDIO": ("audio", AudioContent),
    "VIDEO": ("video", VideoContent),
    "DOCUMENT": ("document", DocumentContent),
}


def contact_identifier_field(**kwargs: Any) -> serializers.CharField:
    identifier = _text(CONTACT_IDENTIFIER_MAX, **kwargs)
    identifier.help_text = (
        "Identifies the contact across requests (an e-mail address is recommended). Trimmed; an e-mail "
        "address is matched case-insensitively and a phone number starting with + by its digits, so "
        "every spelling reaches the same contact and its active conversation."
    )
    return identifier


def contact_name_field(**kwargs: Any) -> serializers.CharField:
    name = _text(CONTACT_NAME_MAX, required=False, **kwargs)
    name.help_text = "Display name: used when the contact is created, or while the contact has no name yet."
    return name


def metadata_field(**kwargs: Any) -> _MetadataField:
    return _MetadataField(
        required=False,
        allow_null=True,
        **kwargs,
        help_text=f"Optional context for the agent, stored with the message: a flat object of at most "
        f"{METADATA_MAX_KEYS} keys (1-{METADATA_KEY_MAX} characters each) with string values of at most "
        f"{METADATA_VALUE_MAX} characters.",
    )


class InboundMessageSerializer(_StrictObject):
    """A contact's message. `validated_data` holds exactly the keyword arguments of api.flow.messaging's
    InboundRequest that come from the body: snake_case, `contact_name` "" and `metadata` {} when not sent."""

    type = serializers.ChoiceField(
        choices=MESSAGE_TYPES,
        error_messages={"invalid_choice": f"Use one of {', '.join(MESSAGE_TYPES)}."},
    )
    contactIdentifier = contact_identifier_field(source="contact_identifier")  # camelCase: the wire name
    contactName = contact_name_field(source="contact_name", default="")
    content = serializers.DictField(error_messages={"not_a_dict": 'Send an object, e.g. {{"text": {{"body": "Hi"}}}}.'})
    metadata = metadata_field(default=dict)

    @property
    def message_type(self) -> str | None:
        """The body's `type` when it names one of MESSAGE_TYPES, whether or not the rest of the body is
        valid; else None. The metrics label (config/metrics.py `message_observe`)."""
        sent = self.initial_data.get("type") if isinstance(self.initial_data, dict) else None
        return sent if isinstance(sent, str) and sent in MESSAGE_TYPES else None

    def validate(self, attrs):
        key, serializer_class = CONTENT_SERIALIZERS[attrs["type"]]
        content = attrs["content"]
        others = sorted(set(content) - {key})
        if key not in content or others:
            raise serializers.ValidationError(
                {
                    "content": [
                        f'For type {attrs["type"]} send content as {{"{key}": {{...}}}}'
                        + (f"; remove {', '.join(others)}." if others else ".")
                    ]
                }
            )
        inner = serializer_class(data=content[key])
        if not inner.is_valid():
            raise serializers.ValidationError({"content": {key: inner.errors}})
        # Keep only what was sent, in the request's own shape (empty optional strings dropped).
        attrs["content"] = {key: {k: v for k, v in inner.validated_data.items() if v not in ("", None)}}
        return attrs


# --- the 200 body ----------------------------------------------------------------------------------------


def iso(value: datetime) -> str:
    """UTC with milliseconds and a Z: `2026-11-25T18:54:50.684Z`."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ConversationView:
    """A conversation as the API shows it (`conversation` in the 200 body)."""

    id: str
    status: str
    channel_id: str
    contact_id: str
    agent_id: str
    agent_name: str
    team_id: str | None
    team_name: str | None
    created_at: datetime
    last_message_at: datetime
    closed_at: datetime | None = None
    close_reason: str | None = None
    assigned_to_human: bool = False  # AI agents only: there is no human handoff
    labels: tuple[str, ...] = ()

    @property
    def assignee(self) -> dict[str, str]:
        return {"type": "AI_AGENT", "id": self.agent_id, "name": self.agent_name}


@dataclass(frozen=True)
class AiMessageView:
    """One agent message. `content` is as stored, in the request's shape, e.g. {"text": {"body": "..."}}."""

    id: str
    type: str
    content: dict[str, Any]
    sender_name: str
    created_at: datetime
    sender_type: str = "AI"
    channel_message_id: str | None = None  # an API channel has no provider-side message id

    @property
    def wire_content(self) -> dict[str, Any]:
        # Blubash's shape: the content object plus its type's key in lower case, {"text": {...}, "type": "text"}.
        return {**self.content, "type": self.type.lower()}


@dataclass(frozen=True)
class UsageView:
    credits: int
    balance: int
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class MessageResult:
    contact_id: str
    conversation_id: str
    message_id: str
    conversation: ConversationView
    ai_messages: list[AiMessageView]
    usage: UsageView
    success: bool = True
    actions: tuple[dict[str, Any], ...] = ()  # api.flow.actions' records, in the order made
    sources: list[dict[str, str | None]] = field(default_factory=list)
    superseded_by: str | None = None  # SupersededResultSerializer's only


class IsoDateTimeField(serializers.DateTimeField):
    """Renders `iso()`: always UTC, milliseconds, `Z`."""

    def to_representation(self, value):
        return iso(value)


class ReplyContentField(serializers.DictField):
    """A reply's content object; api.edge.schema documents its shapes (`ReplyContent`)."""

    def to_representation(self, value):
        return value


class AssigneeSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["AI_AGENT"])
    id = serializers.CharField()
    name = serializers.CharField()


class ConversationSerializer(serializers.Serializer):
    """The conversation and its assignment. Blubash's fields first, then ours."""

    status = serializers.ChoiceField(choices=["ACTIVE", "CLOSED"])
    assignedToHuman = serializers.BooleanField(
        source="assigned_to_human", help_text="Always false: conversations of API channels are handled by AI agents."
    )
    aiAgentId = serializers.CharField(source="agent_id")
    aiAgentName = serializers.CharField(source="agent_name")
    teamId = serializers.CharField(source="team_id", allow_null=True, help_text="The channel's team, if any.")
    teamName = serializers.CharField(source="team_name", allow_null=True)
    id = serializers.CharField()
    channelId = serializers.CharField(source="channel_id")
    contactId = serializers.CharField(source="contact_id")
    assignee = AssigneeSerializer()
    createdAt = IsoDateTimeField(source="created_at")
    lastMessageAt = IsoDateTimeField(source="last_message_at")
    closedAt = IsoDateTimeField(source="closed_at", allow_null=True, help_text="Null while active.")
    closeReason = serializers.ChoiceField(
        source="close_reason",
        choices=["inactivity", "api", "operator", "agent"],
        allow_null=True,
        help_text="Why the conversation was closed; null while active.",
    )
    labels = serializers.ListField(
        child=serializers.CharField(), help_text="Set by the agent's add_conversation_labels action; [] when none."
    )


ACTION_TYPES = [*BUILTIN_ACTIONS, HTTP_TOOL_ACTION]


class ActionSerializer(serializers.Serializer):
    """One action of the agent's turn (README "Actions")."""

    type = serializers.ChoiceField(choices=[*BUILTIN_ACTIONS, HTTP_TOOL_ACTION])
    name = serializers.CharField(help_text="The action's or the HTTP tool's name.")
    status = serializers.ChoiceField(choices=["succeeded", "failed"])
    arguments = serializers.DictField(help_text="As the model sent them.")


class AiMessageSerializer(serializers.Serializer):
    """One of the agent's messages. Blubash's fields first, then ours."""

    type = serializers.ChoiceField(choices=list(MESSAGE_TYPES))
    content = ReplyContentField(source="wire_content")
    sender_type = serializers.ChoiceField(choices=["AI"])
    sender_name = serializers.CharField(help_text="The agent's name.")
    channel_message_id = serializers.CharField(allow_null=True, help_text="Always null on an API channel.")
    id = serializers.CharField()
    createdAt = IsoDateTimeField(source="created_at")


class UsageSerializer(serializers.Serializer):
    credits = serializers.IntegerField(min_value=0, help_text="Credits this message spent.")
    balance = serializers.IntegerField(min_value=0, help_text="The workspace's credits left.")
    inputTokens = serializers.IntegerField(source="input_tokens", min_value=0)
    outputTokens = serializers.IntegerField(source="output_tokens", min_value=0)


def represent(serializer_class: type[serializers.Serializer], instance: Any) -> dict[str, Any]:
    """`serializer_class(instance).data`, through one instance of the class per process: a new serializer
    deep-copies all of its declared fields (and its nested serializers') before it renders anything, which
    cost the messages endpoint more CPU than its SQL. Rendering reads the fields and changes nothing, so one
    instance serves every request and thread."""
    return dict(_renderer(serializer_class).to_representation(instance))  # type: ignore[arg-type]


@cache
def _renderer(serializer_class: type[serializers.Serializer]) -> serializers.Serializer:
    return serializer_class()


class SourceSerializer(serializers.Serializer):
    documentId = serializers.CharField(help_text="The documentId the document was PUT with.")
    title = serializers.CharField()
    url = serializers.CharField(allow_null=True, help_text="The URL it was read from; null for a text document.")


class MessageResultSerializer(serializers.Serializer):
    """The agent's reply to the contact's message."""

    success = serializers.BooleanField()
    contactId = serializers.CharField(source="contact_id")
    conversationId = serializers.CharField(source="conversation_id")
    messageId = serializers.CharField(source="message_id")
    conversation = ConversationSerializer()
    aiMessages = AiMessageSerializer(source="ai_messages", many=True, help_text="The agent's messages, earliest first.")
    usage = UsageSerializer()
    actions = ActionSerializer(many=True, help_text="The agent's actions in this turn, in order; [] when none.")
    sources = SourceSerializer(
        many=True,
        help_text="The documents whose passages the agent was given for this message, best first; [] when none.",
    )


class SupersededResultSerializer(MessageResultSerializer):
    """The 200 body of a message superseded by a newer one of its conversation (a channel in the latest burst
    mode, README "Bursts of short messages"): no agent messages, no credits, and the newer message's id."""

    supersededBy = serializers.CharField(
        source="superseded_by", help_text="The newer message of the conversation that is answered instead."
    )


# --- the read and data API (api/edge/read_views.py) ----------------------------------------------------------


class NullableIsoDateTimeField(IsoDateTimeField):
    def to_representation(self, value):
        return None if value is None else iso(value)


class MessageContentField(serializers.DictField):
    """A stored message's content in the aiMessages' shape: the request's object plus its lower-case type,
    e.g. {"text": {"body": "Hi"}, "type": "text"}; after an erasure {"erased": true, "type": "text"}."""

    def to_representation(self, value):
        return value


class ContactSerializer(serializers.Serializer):
    id = serializers.CharField()
    identifier = serializers.CharField(
        help_text="As first sent (for display); `erased:<id>` once the contact is erased."
    )
    name = serializers.CharField(allow_null=True, help_text="Null when the contact has no name (or was erased).")
    attributes = serializers.DictField(
        child=serializers.CharField(), help_text="What the agent and PATCH set; given to the agent with every message."
    )
    createdAt = IsoDateTimeField(source="created_at")
    lastMessageAt = NullableIsoDateTimeField(
        source="last_message_at", allow_null=True, help_text="The newest message of any of its conversations."
    )


class MessageItemSerializer(serializers.Serializer):
    """One stored message: the contact's (INBOUND, CONTACT) or the agent's (OUTBOUND, AI)."""

    id = serializers.CharField()
    direction = serializers.ChoiceField(choices=["INBOUND", "OUTBOUND"])
    sender_type = serializers.ChoiceField(choices=["CONTACT", "AI"])
    type = serializers.ChoiceField(choices=list(MESSAGE_TYPES))
    content = MessageContentField()
    status = serializers.ChoiceField(
        choices=["PENDING", "ANSWERED", "FAILED", "SUPERSEDED", "SENT"],
        help_text="Inbound: PENDING until answered, then ANSWERED or FAILED, or SUPERSEDED by a newer message of "
        "the conversation (a channel in the latest burst mode); outbound: SENT.",
    )
    errorCode = serializers.CharField(
        source="error_code", allow_null=True, help_text="The error code of a FAILED message, else null."
    )
    metadata = serializers.DictField(child=serializers.CharField(), help_text="As sent with the message; {} if none.")
    actions = ActionSerializer(many=True, help_text="An inbound message's: the actions of its turn; else [].")
    createdAt = IsoDateTimeField(source="created_at")


def message_item(row: dict[str, Any]) -> dict[str, Any]:
    """A message row (conversations.selectors.MESSAGE_FIELDS) as MessageItemSerializer reads it."""
    inbound = row["direction"] == "INBOUND"
    return {
        **row,
        "sender_type": "CONTACT" if inbound else "AI",
        "content": {**row["content"], "type": row["type"].lower()},
        "error_code": row["error_code"] or None,
    }


def conversation_view(row: dict[str, Any]) -> ConversationView:
    """A conversation row (conversations.selectors.CONVERSATION_FIELDS with the agent's name and the
    channel's team) as the API shows it: the same object the messages endpoint's 200 body carries."""
    return ConversationView(
        id=row["id"],
        status=row["status"],
        channel_id=row["channel_id"],
        contact_id=row["contact_id"],
        agent_id=row["agent_id"] or "",
        agent_name=row["agent_name"] or "",
        team_id=row["team_id"],
        team_name=row["team_name"],
        created_at=row["created_at"],
        last_message_at=row["last_message_at"] or row["created_at"],
        closed_at=row["closed_at"],
        close_reason=row["close_reason"] or None,
        labels=tuple(row["labels"] or ()),
    )


class _Page(serializers.Serializer):
    success = serializers.BooleanField()
    nextCursor = serializers.CharField(
        allow_null=True, help_text="Send it as `cursor` for the next page; null on the last page."
    )


class ContactResultSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    contact = ContactSerializer()


class ContactPageSerializer(_Page):
    data = ContactSerializer(many=True)


class ConversationResultSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    conversation = ConversationSerializer()


class ConversationPageSerializer(_Page):
    data = ConversationSerializer(many=True)


class MessagePageSerializer(_Page):
    data = MessageItemSerializer(many=True)


class MessageGetSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    message = MessageItemSerializer()
    result = MessageResultSerializer(
        allow_null=True,
        help_text="The messages endpoint's 200 body for this message, byte for byte; null until it is "
        "answered (and for the agent's own messages).",
    )


class UsageDaySerializer(serializers.Serializer):
    date = serializers.DateField()
    messages = serializers.IntegerField(min_value=0, help_text="Replies charged that day (ledger entries).")
    credits = serializers.IntegerField(min_value=0)
    inputTokens = serializers.IntegerField(min_value=0)
    outputTokens = serializers.IntegerField(min_value=0)


class UsageResultSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    balance = serializers.IntegerField(help_text="The workspace's credits now.")
    reserved = serializers.IntegerField(help_text="Credits held for replies in progress.")
    days = UsageDaySerializer(many=True, help_text="Every UTC day of the range, oldest first.")


class ErasedCountsSerializer(serializers.Serializer):
    messages = serializers.IntegerField(min_value=0, help_text="Messages whose content was erased now.")
    media = serializers.IntegerField(min_value=0, help_text="Media assets (cached files and text) deleted now.")


class ErasureResultSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    erased = ErasedCountsSerializer()
