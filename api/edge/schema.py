"""The OpenAPI description of the messages endpoint and the conversation close (drf-spectacular), kept out of
the views.

The view parses its JSON itself (api/edge/parsers.py), so the request is declared here: a `oneOf` of one
schema per message type, told apart by `type` (the discriminator), built from the same content serializers
that validate requests, so the documented limits are the enforced ones. The responses: the success body is
api.serializers.MessageResultSerializer (the one that renders it), and every error status has the
error body with the codes it can carry.
"""

import json
from typing import Any

from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.plumbing import build_basic_type
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import serializers

from api.edge.knowledge_serializers import (
    AgentPageSerializer,
    DeletedSerializer,
    DocumentPageSerializer,
    DocumentPutSerializer,
    DocumentResultSerializer,
)
from api.flow.idempotency import MAX_KEY_LENGTH, IdempotencyInProgress, IdempotencyKeyReused, InvalidIdempotencyKey
from api.flow.messaging import ConversationBusy
from api.serializers import (
    CONTENT_SERIALIZERS,
    MESSAGE_TYPES,
    METADATA_MAX_KEYS,
    METADATA_VALUE_MAX,
    ContactPageSerializer,
    ContactResultSerializer,
    ConversationPageSerializer,
    ConversationResultSerializer,
    ConversationSerializer,
    ErasureResultSerializer,
    MessageGetSerializer,
    MessagePageSerializer,
    MessageResultSerializer,
    UsageResultSerializer,
    _StrictObject,
    contact_identifier_field,
    contact_name_field,
    metadata_field,
)
from billing.credits import InsufficientCredits
from channels_app.authentication import InvalidApiKey, MissingApiKey
from channels_app.selectors import ChannelNotFound, ChannelUnavailable
from config.errors import (
    ApplicationError,
    DatabaseUnavailable,
    InvalidHost,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceBusy,
)
from config.exception_handler import error_body, method_not_allowed
from contacts.errors import ContactNotFound
from conversations.agents.errors import AgentTimeout, AgentUnavailable
from conversations.errors import ConversationNotFound, MessageNotFound
from conversations.media.errors import MediaTooLarge, MediaTypeMismatch, MediaUnreachable, MediaUrlNotAllowed
from conversations.services import ContactErased
from knowledge.errors import (
    AgentNotFound,
    DocumentEmpty,
    DocumentNotFound,
    DocumentTooLarge,
    IndexingTimeout,
    KnowledgeFull,
)

# --- how our own field and serializer classes look in the schema --------------------------------------


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "channels_app.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "The workspace's API key, `prefix.secret`, as `manage.py bootstrap_demo` or "
            "`manage.py apikey create` printed it.",
        }


class StringFieldSchema(OpenApiSerializerFieldExtension):
    """A JSON string (numbers and booleans are refused). A required one must hold more than whitespace
    (a text body is kept as sent, other strings are trimmed). Null characters are refused anywhere."""

    target_class = "api.serializers._StringField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        schema = build_basic_type(OpenApiTypes.STR)
        if direction == "request" and not self.target.allow_blank:
            schema["pattern"] = r"^[^\u0000]*\S[^\u0000]*$"
        return schema


class PublicUrlFieldSchema(OpenApiSerializerFieldExtension):
    target_class = "api.serializers._PublicUrlField"
    priority = 1  # before StringFieldSchema, which matches it too

    def map_serializer_field(self, auto_schema, direction):
        return {
            "type": "string",
            "format": "uri",
            "description": "A public http:// or https:// URL of the file (at most 10 MB, downloaded within "
            "30 seconds).",
        }


class StrictObjectSchema(OpenApiSerializerExtension):
    """Content objects refuse unknown keys (a typo is an error, not silently dropped): say so."""

    target_class = "api.serializers._StrictObject"
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_basic_serializer(self.target, direction)
        schema["additionalProperties"] = False
        return schema


# --- the request: one schema per message type ------------------------------------------------------------

SPEC_EXAMPLES = {  # the spec's own examples, verbatim
    "TEXT": {
        "content": {"text": {"body": "Hello, how can I help you?"}},
        "type": "TEXT",
        "contactIdentifier": "user@example.com",
        "contactName": "User Name",
    },
    "IMAGE": {
        "content": {"image": {"url": "https://example.com/image.jpg", "caption": "Image caption"}},
        "type": "IMAGE",
        "contactIdentifier": "user@example.com",
    },
    "AUDIO": {
        "content": {"audio": {"url": "https://example.com/audio.mp3"}},
        "type": "AUDIO",
        "contactIdentifier": "user@example.com",
    },
    "VIDEO": {
        "content": {"video": {"url": "https://example.com/video.mp4", "caption": "Video caption"}},
        "type": "VIDEO",
        "contactIdentifier": "user@example.com",
    },
    "DOCUMENT": {
        "content": {
            "document": {
                "url": "https://example.com/document.pdf",
                "filename": "document.pdf",
                "caption": "Document description",
            }
        },
        "type": "DOCUMENT",
        "contactIdentifier": "user@example.com",
    },
}


def _content_wrapper(message_type: str) -> type[_StrictObject]:
    """`{"<t>": {...}}`: the content object of one type, as a request sends it and a reply carries it."""
    key, content_class = CONTENT_SERIALIZERS[message_type]
    return type(
        f"{message_type.title()}MessageContent",
        (_StrictObject,),
        {
            "__doc__": f'The content of a message of type {message_type}: exactly one key, "{key}".',
            key: content_class(),
        },
    )


CONTENT_WRAPPERS = {message_type: _content_wrapper(message_type) for message_type in MESSAGE_TYPES}


def _message_request(message_type: str) -> type[_StrictObject]:
    """`{"type": T, "contactIdentifier", "contactName", "content": {"<t>": {...}}, "metadata"}` for one
    type T, with the fields of InboundMessageSerializer (which validates every type)."""
    return type(
        f"{message_type.title()}Message",
        (_StrictObject,),
        {
            "__doc__": f"A message of type {message_type} from a contact. Unknown fields are refused; null for "
            "an optional field is the field left out.",
            "type": serializers.ChoiceField(choices=[message_type], help_text="The message type."),
            "contactIdentifier": contact_identifier_field(),
            "contactName": contact_name_field(),
            "content": CONTENT_WRAPPERS[message_type](),
            "metadata": metadata_field(),
        },
    )


MESSAGE_REQUESTS = {message_type: _message_request(message_type) for message_type in MESSAGE_TYPES}

InboundMessageRequest = PolymorphicProxySerializer(
    component_name="InboundMessage",
    serializers=MESSAGE_REQUESTS,  # {"TEXT": TextMessage, ...}: the discriminator's mapping
    resource_type_field_name="type",
)

# --- the responses: the 200 body is api.serializers.MessageResultSerializer ---------------------


def _reply_content(message_type: str) -> type[serializers.Serializer]:
    """A reply's content, shaped like a request's plus Blubash's lower-case `type`, without the request's
    limits (an agent's paragraph can be longer than a contact may send) and open to keys added later."""
    key, content_class = CONTENT_SERIALIZERS[message_type]
    inner = type(
        f"Reply{message_type.title()}",
        (serializers.Serializer,),
        {name: serializers.CharField(required=field.required) for name, field in content_class().fields.items()},
    )
    return type(
        f"Reply{message_type.title()}Content",
        (serializers.Serializer,),
        {
            "__doc__": f'The content of a reply of type {message_type}: the key "{key}" and `type` "{key}".',
            key: inner(),
            "type": serializers.ChoiceField(choices=[key], help_text="The message type in lower case."),
        },
    )


ReplyContent = PolymorphicProxySerializer(
    component_name="ReplyContent",
    serializers=[_reply_content(message_type) for message_type in MESSAGE_TYPES],
    resource_type_field_name=None,
)


class ReplyContentFieldSchema(OpenApiSerializerFieldExtension):
    target_class = "api.serializers.ReplyContentField"

    def map_serializer_field(self, auto_schema, direction):
        return auto_schema.resolve_serializer(ReplyContent, direction).ref


class MetadataFieldSchema(OpenApiSerializerFieldExtension):
    """What JSON Schema in OpenAPI 3.0 can say of `metadata`; the key length (1-64) is in the description."""

    target_class = "api.serializers._MetadataField"

    def map_serializer_field(self, auto_schema, direction):
        return {
            "type": "object",
            "maxProperties": METADATA_MAX_KEYS,
            "additionalProperties": {"type": "string", "maxLength": METADATA_VALUE_MAX, "pattern": r"^[^\u0000]*$"},
        }


class ErrorDetail(serializers.Serializer):
    code = serializers.CharField(help_text="A stable snake_case word; the status's description lists them.")
    message = serializers.CharField(help_text="A sentence a person can act on.")
    details = serializers.DictField(help_text="The offending fields or headers, and what was wrong with them.")


class ErrorResult(serializers.Serializer):
    """Every error: `success` is false and `error` says what to fix."""

    success = serializers.BooleanField()
    error = ErrorDetail()


def _error(status: int, summary: str, errors: dict[type[ApplicationError], tuple[str, dict]]) -> OpenApiResponse:
    """An error response: `errors` maps each error class that answers `status` to (when it happens, an
    example's details). The codes are the classes' own, so the schema cannot name a code the code lacks."""
    assert all(error.status_code == status for error in errors), f"an error class of {status} answers another status"
    codes = {error.code: about for error, about in errors.items()}
    lines = "\n".join(f"- `{code}`: {when}" for code, (when, _) in codes.items())
    return OpenApiResponse(
        response=ErrorResult,
        description=f"{summary}\n\n{lines}",
        examples=[
            OpenApiExample(
                code,
                value={"success": False, "error": {"code": code, "message": when, "details": details}},
                status_codes=[status],
                response_only=True,
            )
            for code, (when, details) in codes.items()
        ],
    )


class ProcessingSerializer(serializers.Serializer):
    """The 202 of the asynchronous mode (`Prefer: respond-async`), api.flow.messaging.processing_result."""

    success = serializers.BooleanField(default=True)
    status = serializers.ChoiceField(choices=["PROCESSING"])
    contactId = serializers.CharField()
    conversationId = serializers.CharField()
    messageId = serializers.CharField()


RESPONSES = {
    (200, "application/json"): OpenApiResponse(
        response=MessageResultSerializer,
        description="The message was stored and the agent answered. On a channel in the `latest` burst mode a "
        "message superseded by a newer one of its conversation answers this body with `aiMessages` empty, "
        "`usage.credits` 0 and one more field, `supersededBy`: the newer message's id (README \"Bursts of short "
        'messages").',
    ),
    (200, "text/event-stream"): OpenApiResponse(
        response={"type": "string"},
        description="With `Accept: text/event-stream`: Server-Sent Events. `event: delta`, data "
        '`{"text": "..."}`, each piece of the answer as the agent writes it; `event: message`, data one '
        "finished `aiMessages` item; then `event: done`, data exactly the 200 JSON body. Every event has an "
        "`id:`: a delta `<messageId>:<n>`, a message its item's id, done and error the `messageId`. A retry "
        "with the same idempotency key that asks for a stream replays the end of the stream, its `message` "
        "events and `done` with the same ids (no deltas). "
        "A failure once the agent started is `event: error`, data the error body. Errors found before the "
        "agent starts are JSON responses with their status code, as without streaming.",
    ),
    (202, "application/json"): OpenApiResponse(
        response=ProcessingSerializer,
        description="With `Prefer: respond-async`: the message was stored; the agent answers it later. Read "
        "the result at `Location` (`GET /api/v1/messages/{messageId}`) or receive it at the channel's "
        "webhook (`message.replied`, `message.failed`). A retry with the same idempotency key answers this "
        "202 again while the agent works, and the stored 200 body once it answered.",
    ),
    400: _error(
        400,
        "The request cannot be processed as sent.",
        {
            InvalidRequest: (
                "Bad JSON, wrong Content-Type, an unknown type, content not matching the type, "
                "empty or too long fields, an unknown field, bad metadata.",
                {"content.text.body": "This field may not be blank."},
            ),
            ChannelUnavailable: (
                "The channel exists but is inactive, not an API channel, or has no agent.",
                {"channelId": "ch_01m8a0tewa493xysacwf74zzk6", "reason": "inactive"},
            ),
            InvalidIdempotencyKey: (
                "The idempotency key is not 1-255 printable ASCII characters.",
                {"header": "X-Idempotency-Key", "length": 0},
            ),
            InvalidHost: (
                "The Host header is not one of the service's host names (ALLOWED_HOSTS).",
                {"header": "Host", "host": "attacker.example"},
            ),
            MediaUrlNotAllowed: (
                "The media URL is refused (scheme, credentials, non-public address).",
                {"field": "content.image.url", "reason": "address"},
            ),
            MediaUnreachable: (
                "The media file could not be downloaded.",
                {"field": "content.image.url", "reason": "timeout"},
            ),
            MediaTypeMismatch: (
                "The media file's content does not match the message type.",
                {"field": "content.image.url", "detectedMimeType": "application/pdf"},
            ),
        },
    ),
    401: _error(
        401,
        "No API key, or one that does not work.",
        {
            MissingApiKey: ("The X-API-Key header is missing or empty.", {"header": "X-API-Key"}),
            InvalidApiKey: ("The key is wrong, revoked or expired.", {"header": "X-API-Key"}),
        },
    ),
    402: _error(
        402,
        "The workspace cannot pay for the reply; nothing was stored.",
        {
            InsufficientCredits: ("Not enough credits for the reply.", {"balance": 0, "required": 1}),
        },
    ),
    404: _error(
        404,
        "No such channel in the key's workspace.",
        {
            ChannelNotFound: (
                "No channel with this id in your workspace (another workspace's channels are not found either).",
                {"channelId": "ch_doesnotexist"},
            ),
            NotFound: ("No such URL.", {}),
        },
    ),
    409: _error(
        409,
        "Try again later, after `Retry-After` seconds.",
        {
            IdempotencyInProgress: (
                "A request with the same idempotency key is still being processed.",
                {"header": "X-Idempotency-Key"},
            ),
            ConversationBusy: (
                "An earlier message of the conversation is still unanswered.",
                {"conversationId": "cv_01m8a0z0swmvbrf7kdwdttser7"},
            ),
            ContactErased: ("The contact was erased while the message was on its way; nothing was kept.", {}),
        },
    ),
    413: _error(
        413,
        "The body, or the media file, is too large.",
        {
            PayloadTooLarge: ("The JSON body is over the limit (64 KiB by default).", {"limitBytes": 65536}),
            MediaTooLarge: (
                "The media file is over 10 MB.",
                {"field": "content.image.url", "limitBytes": 10485760},
            ),
        },
    ),
    422: _error(
        422,
        "The idempotency key was used before for a different request.",
        {
            IdempotencyKeyReused: ("Same key, different request: use a new key.", {"header": "X-Idempotency-Key"}),
        },
    ),
    429: _error(
        429,
        "Too many requests for this API key; retry after `Retry-After` seconds.",
        {
            RateLimited: ("Over the key's requests per minute.", {"retryAfterSeconds": 12}),
        },
    ),
    500: _error(
        500,
        "A bug on our side; the message is kept and the body carries no trace.",
        {
            ApplicationError: ("The server could not process the request. Try again later.", {}),
        },
    ),
    502: _error(
        502,
        "The agent failed; the message is kept and no credits are charged.",
        {
            AgentUnavailable: ("The AI agent could not answer; retry with the same idempotency key.", {}),
        },
    ),
    503: _error(
        503,
        "Overloaded, or the database went away; retry after `Retry-After` seconds.",
        {
            ServiceBusy: (
                "The service is too busy to take this request now.",
                {"reason": "database_pool_exhausted"},
            ),
            DatabaseUnavailable: (
                "The database connection broke during the request (a database restart or failover).",
                {},
            ),
        },
    ),
    504: _error(
        504,
        "The agent did not answer in time; the message is kept and no credits are charged.",
        {
            AgentTimeout: ("The AI agent did not answer in time; retry with the same idempotency key.", {}),
        },
    ),
}

_IDEMPOTENCY_KEY_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": "^[\\x20-\\x7e]+$"}
_REQUEST_ID_SCHEMA = {"type": "string", "maxLength": 128, "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]*$"}

PARAMETERS = [
    OpenApiParameter(
        "Prefer",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        description="Optional. `respond-async`: answer 202 right after the message is stored; the agent "
        'answers it later (README "Replies later"). Other preferences are ignored.',
    ),
    OpenApiParameter(
        "Accept",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        description="Optional. `text/event-stream`: stream the answer as Server-Sent Events (see the 200 "
        "`text/event-stream` response). `Prefer: respond-async` wins over it.",
    ),
    OpenApiParameter(
        "Location",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=[202],
        required=True,
        description="`/api/v1/messages/{messageId}`: where the message's result is read.",
    ),
    OpenApiParameter(
        "Preference-Applied",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=[202],
        required=True,
        description="`respond-async`.",
    ),
    OpenApiParameter(
        "channelId",
        OpenApiTypes.STR,
        OpenApiParameter.PATH,
        description="The id of an API channel of your workspace (`ch_…`).",
    ),
    OpenApiParameter(
        "X-Idempotency-Key",
        _IDEMPOTENCY_KEY_SCHEMA,
        OpenApiParameter.HEADER,
        description="Optional. 1-255 printable ASCII characters (a UUID is a good choice), scoped to the "
        "workspace. A retry with the same key and body answers the first response again, byte "
        "for byte, with `Idempotent-Replayed: true`; the same key with another body is 422; "
        "while the first is running, 409.",
    ),
    OpenApiParameter(
        "Idempotency-Key",
        _IDEMPOTENCY_KEY_SCHEMA,
        OpenApiParameter.HEADER,
        description="The IETF draft's name for `X-Idempotency-Key`. If both are sent they must be "
        "equal (else 400 `invalid_idempotency_key`).",
    ),
    OpenApiParameter(
        "X-Request-ID",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        description="Optional. Your id for the request (1-128 letters, digits and `._:-`, starting "
        "with a letter or digit), echoed in the response and written in our logs; any "
        "other value is replaced by a generated one, not refused.",
    ),
    OpenApiParameter(
        "X-Request-ID",
        _REQUEST_ID_SCHEMA,
        OpenApiParameter.HEADER,
        response=True,
        required=True,
        description="The request's id, as sent or generated; quote it when asking for help.",
    ),
    OpenApiParameter(
        "Idempotent-Replayed",
        {"type": "string", "enum": ["true"]},
        OpenApiParameter.HEADER,
        response=[200],
        description="Present when this is the stored response to an earlier request with the same idempotency key.",
    ),
    OpenApiParameter(
        "Retry-After",
        {"type": "string", "pattern": "^[0-9]+$"},
        OpenApiParameter.HEADER,
        response=[429],
        required=True,
        description="Seconds to wait before retrying.",
    ),
    OpenApiParameter(
        "Retry-After",
        {"type": "string", "pattern": "^[0-9]+$"},
        OpenApiParameter.HEADER,
        response=[409, 503],
        description="Seconds to wait before retrying.",
    ),
]

# The README's example response (README "Example"); tests/test_schema.py checks it has a real response's fields.
REPLY_EXAMPLE = {
    "success": True,
    "contactId": "ct_01m8a0z0svjtnbznghw1rmd1t3",
    "conversationId": "cv_01m8a0z0swmvbrf7kdwdttser7",
    "messageId": "msg_01m8a0z0sxadfn7gzazsxz5znw",
    "conversation": {
        "status": "ACTIVE",
        "assignedToHuman": False,
        "aiAgentId": "ag_01m8a0tew84ky5vn4web71wcec",
        "aiAgentName": "Demo agent",
        "teamId": None,
        "teamName": None,
        "id": "cv_01m8a0z0swmvbrf7kdwdttser7",
        "channelId": "ch_01m8a0tewa493xysacwf74zzk6",
        "contactId": "ct_01m8a0z0svjtnbznghw1rmd1t3",
        "assignee": {"type": "AI_AGENT", "id": "ag_01m8a0tew84ky5vn4web71wcec", "name": "Demo agent"},
        "createdAt": "2026-11-25T18:54:50.684Z",
        "lastMessageAt": "2026-11-25T18:54:50.698Z",
        "closedAt": None,
        "closeReason": None,
        "labels": [],
    },
    "aiMessages": [
        {
            "type": "TEXT",
            "content": {"text": {"body": "Yes. You can ask for a refund within 30 days of purchase."}, "type": "text"},
            "sender_type": "AI",
            "sender_name": "Demo agent",
            "channel_message_id": None,
            "id": "msg_01m8a0z0tcstnjcb0pdx5ewgmh",
            "createdAt": "2026-11-25T18:54:50.700Z",
        }
    ],
    "usage": {"credits": 1, "balance": 999, "inputTokens": 28, "outputTokens": 40},
    "actions": [],
    "sources": [{"documentId": "refund-policy", "title": "Refunds", "url": None}],
}

message_create_schema = extend_schema(
    operation_id="channel_message_create",
    summary="Send a contact's message and get the AI agent's reply",
    description=(
        "Finds or creates the contact by `contactIdentifier`, appends the message to the contact's active "
        "conversation on the channel, asks the channel's AI agent and answers with its replies "
        "(`aiMessages`, earliest first) and the credits used.\n\n"
        "Limits: the body at most 64 KiB (`API_MAX_BODY_BYTES`); `contactIdentifier` 1-320 characters, "
        "`contactName` 200, text `body` 1-4096, `caption` 1024, `filename` 255, media `url` 2048 (http or "
        "https; the file at most 10 MB, downloaded within 30 s); `metadata` at most 16 keys of 1-64 "
        "characters, each value a string of at most 512. Unknown fields, at the top and inside `content`, are "
        "refused; `null` for an optional field is the field left out. A text `body` is kept as sent, leading "
        "and trailing whitespace included; `contactIdentifier` is trimmed, an e-mail address matched "
        "case-insensitively and a `+` phone number by its digits. "
        "Requests per minute per API key are limited (429 with `Retry-After`)."
    ),
    tags=["messages"],
    request={"application/json": InboundMessageRequest},
    responses=RESPONSES,
    parameters=PARAMETERS,
    examples=[
        OpenApiExample(f"{message_type.title()} (spec)", value=value, request_only=True)
        for message_type, value in SPEC_EXAMPLES.items()
    ]
    + [
        OpenApiExample(
            "Reply",
            response_only=True,
            status_codes=[200],
            value=REPLY_EXAMPLE,
        ),
    ],
)


def require_request_bodies(result, generator, request, public):
    """A postprocessing hook: drf-spectacular cannot tell that a `oneOf` body is required; ours always is."""
    for path in result.get("paths", {}).values():
        for operation in path.values():
            if isinstance(operation, dict) and "requestBody" in operation:
                operation["requestBody"]["required"] = True
    return result


# In the order of the views' `allowed_methods` (DRF's http_method_names), which a real 405 lists.
_HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def document_method_not_allowed(result, generator, request, public):
    """A postprocessing hook: every API URL answers a method it does not take with 405 method_not_allowed,
    the error body saying which methods it takes (config.exception_handler.method_not_allowed, which the
    example is built by), and `Allow` listing them."""
    for path in result.get("paths", {}).values():
        allowed = [method.upper() for method in _HTTP_METHODS if method in path]
        other = next(method.upper() for method in _HTTP_METHODS if method not in path)
        error = method_not_allowed(method=other, allowed=allowed)
        for method in allowed:
            responses = path[method.lower()]["responses"]
            headers = dict(responses.get("401", {}).get("headers", {}))  # the operation's own (X-Request-ID)
            headers["Allow"] = {
                "schema": {"type": "string"},
                "description": "The methods this URL takes.",
                "required": True,
            }
            responses["405"] = {
                "description": f"The URL does not take this method.\n\n- `{error.code}`: {error.message}",
                "headers": headers,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/ErrorResult"},
                        "examples": {
                            "MethodNotAllowed": {
                                "value": json.loads(
                                    error_body(code=error.code, message=error.message, details=error.details)
                                ),
                                "summary": error.code,
                            }
                        },
                    }
                },
            }
    return result


# --- the read and data API (api/edge/read_views.py) ----------------------------------------------------------

_CONTACT_EXAMPLE = {
    "id": "ct_01m8a0z0svjtnbznghw1rmd1t3",
    "identifier": "user@example.com",
    "name": "User Name",
    "attributes": {"language": "pt", "lastOrder": "A-1001"},
    "createdAt": "2026-11-25T18:54:50.684Z",
    "lastMessageAt": "2026-11-25T18:54:50.698Z",
}
_MESSAGE_EXAMPLE = {
    "id": "msg_01m8a0z0sxadfn7gzazsxz5znw",
    "direction": "INBOUND",
    "sender_type": "CONTACT",
    "type": "TEXT",
    "content": {"text": {"body": "Can I get a refund?"}, "type": "text"},
    "status": "ANSWERED",
    "errorCode": None,
    "metadata": {"orderId": "A-1001"},
    "actions": REPLY_EXAMPLE["actions"],
    "createdAt": "2026-11-25T18:54:50.690Z",
}
_REPLY_ITEM_EXAMPLE: dict[str, Any] = {
    "id": "msg_01m8a0z0tcstnjcb0pdx5ewgmh",
    "direction": "OUTBOUND",
    "sender_type": "AI",
    "type": "TEXT",
    "content": {"text": {"body": "Yes. You can ask for a refund within 30 days of purchase."}, "type": "text"},
    "status": "SENT",
    "errorCode": None,
    "metadata": {},
    "actions": [],
    "createdAt": "2026-11-25T18:54:50.700Z",
}
_NEXT_CURSOR = "WzEsMSwibXNnXzAxbThhMHowdGNzdG5qY2IwcGR4NWV3Z21oIl0"
READ_EXAMPLES = {
    "contact": {"success": True, "contact": _CONTACT_EXAMPLE},
    "contacts": {"success": True, "data": [_CONTACT_EXAMPLE], "nextCursor": None},
    "conversation": {"success": True, "conversation": REPLY_EXAMPLE["conversation"]},
    "conversations": {"success": True, "data": [REPLY_EXAMPLE["conversation"]], "nextCursor": None},
    "messages": {"success": True, "data": [_MESSAGE_EXAMPLE, _REPLY_ITEM_EXAMPLE], "nextCursor": _NEXT_CURSOR},
    "message": {"success": True, "message": _MESSAGE_EXAMPLE, "result": REPLY_EXAMPLE},
    "usage": {
        "success": True,
        "balance": 999,
        "reserved": 0,
        "days": [
            {"date": "2026-11-24", "messages": 0, "credits": 0, "inputTokens": 0, "outputTokens": 0},
            {"date": "2026-11-25", "messages": 1, "credits": 1, "inputTokens": 28, "outputTokens": 40},
        ],
    },
    "erasure": {"success": True, "erased": {"messages": 2, "media": 0}},
}


def _read_errors(not_found: tuple[type[ApplicationError], str, str] | None = None) -> dict[int, OpenApiResponse]:
    """The errors every read endpoint can answer; `not_found` = (error class, when, the id's parameter)."""
    responses = {
        400: _error(
            400,
            "A query parameter is not valid.",
            {
                InvalidRequest: (
                    "A bad cursor, limit, status or date (details names the parameter).",
                    {"cursor": "invalid"},
                )
            },
        ),
        401: RESPONSES[401],
        429: RESPONSES[429],
    }
    if not_found is not None:
        error, when, parameter = not_found
        responses[404] = _error(404, when, {error: (when, {parameter: "xx_doesnotexist"})})
    return responses


def _ok(serializer, description: str, example: str) -> dict[int, OpenApiResponse]:
    return {
        200: OpenApiResponse(
            response=serializer,
            description=description,
            examples=[OpenApiExample(example, value=READ_EXAMPLES[example], status_codes=[200], response_only=True)],
        )
    }


def _query(name: str, description: str, **kwargs) -> OpenApiParameter:
    return OpenApiParameter(name, OpenApiTypes.STR, OpenApiParameter.QUERY, description=description, **kwargs)


_PAGING = [
    OpenApiParameter(
        "limit",
        OpenApiTypes.INT,
        OpenApiParameter.QUERY,
        description="Items per page, 1 to 100 (default 20).",
    ),
    _query("cursor", "The previous page's `nextCursor`; leave it out for the first page."),
]
_CONTACT_404 = (ContactNotFound, "No contact with this id in your workspace.", "contactId")
_CONVERSATION_404 = (ConversationNotFound, "No conversation with this id in your workspace.", "conversationId")

contact_get_schema = extend_schema(
    operation_id="contact_get",
    summary="A contact",
    tags=["contacts"],
    responses={**_ok(ContactResultSerializer, "The contact.", "contact"), **_read_errors(_CONTACT_404)},
)
contact_patch_schema = extend_schema(
    operation_id="contact_update",
    summary="Set or remove a contact's attributes",
    description="Merges `attributes` into the contact's: a string sets the key, `null` removes it; other keys stay. "
    "At most 50 keys of 1-64 characters, values strings of at most 512. The agent is given them with every "
    "message, in every conversation.",
    tags=["contacts"],
    request={
        "application/json": {
            "type": "object",
            "properties": {
                "attributes": {
                    "type": "object",
                    "additionalProperties": {"type": "string", "nullable": True, "maxLength": 512},
                    "maxProperties": 50,
                }
            },
            "required": ["attributes"],
            "additionalProperties": False,
        }
    },
    examples=[
        OpenApiExample("Set and remove", value={"attributes": {"language": "pt", "plan": None}}, request_only=True)
    ],
    responses={
        **_ok(ContactResultSerializer, "The contact, its attributes merged.", "contact"),
        **_read_errors(_CONTACT_404),
    },
)
contact_list_schema = extend_schema(
    operation_id="contact_list",
    summary="Contacts, or the one an identifier names",
    description="With `identifier`: the list holding the one contact it names, matched as the messages endpoint "
    "matches `contactIdentifier` (trimmed, e-mail case-insensitive, `+` phone by its digits), or an empty list. "
    "Without: the workspace's contacts, newest first.",
    tags=["contacts"],
    parameters=[_query("identifier", "A contactIdentifier, in any spelling the messages endpoint accepts."), *_PAGING],
    responses={**_ok(ContactPageSerializer, "A page of contacts.", "contacts"), **_read_errors()},
)
contact_delete_schema = extend_schema(
    operation_id="contact_erase",
    summary="Erase a contact's personal data",
    description="Erases the contact's identifier and name, the content and metadata of every message of its "
    "conversations, their stored results, its media files and the bodies kept for idempotent replays and "
    "webhook deliveries; its conversations are closed. Ids, counts and the usage ledger stay. The "
    "identifier can be used again: it makes a new contact. Erasing an erased contact answers zeros. A message "
    "of the contact still being answered fails with 409 `contact_erased` and stores nothing.",
    tags=["contacts"],
    responses={
        **_ok(ErasureResultSerializer, "Erased: the counts of this request.", "erasure"),
        **_read_errors(_CONTACT_404),
    },
)
conversation_list_schema = extend_schema(
    operation_id="conversation_list",
    summary="Conversations, newest lastMessageAt first",
    tags=["conversations"],
    parameters=[
        _query("channelId", "Only this channel's conversations."),
        _query("contactId", "Only this contact's conversations."),
        _query("status", "Only ACTIVE or only CLOSED conversations.", enum=["ACTIVE", "CLOSED"]),
        _query("label", "Only conversations with this label (set by the agent's add_conversation_labels)."),
        _query(
            "order",
            "lastMessage (the default): newest lastMessageAt first; created: newest created first, a key that "
            "does not move, so paging it while conversations get messages skips none.",
            enum=["lastMessage", "created"],
        ),
        *_PAGING,
    ],
    responses={**_ok(ConversationPageSerializer, "A page of conversations.", "conversations"), **_read_errors()},
)
conversation_get_schema = extend_schema(
    operation_id="conversation_get",
    summary="A conversation",
    tags=["conversations"],
    responses={
        **_ok(ConversationResultSerializer, "The conversation.", "conversation"),
        **_read_errors(_CONVERSATION_404),
    },
)
conversation_messages_schema = extend_schema(
    operation_id="conversation_messages",
    summary="A conversation's messages, oldest first",
    description="Every inbound message and every AI message, in the conversation's order.",
    tags=["conversations"],
    parameters=_PAGING,
    responses={**_ok(MessagePageSerializer, "A page of messages.", "messages"), **_read_errors(_CONVERSATION_404)},
)
message_get_schema = extend_schema(
    operation_id="message_get",
    summary="A message and, once answered, the messages endpoint's answer",
    description="`result` is the 200 body the messages endpoint answered for this message, byte for byte; null "
    "while it is waiting for the agent, after a failure, for an AI message and after an erasure.",
    tags=["messages"],
    responses={
        **_ok(MessageGetSerializer, "The message.", "message"),
        **_read_errors((MessageNotFound, "No message with this id in your workspace.", "messageId")),
    },
)
usage_schema = extend_schema(
    operation_id="usage_get",
    summary="Credits and tokens per UTC day",
    description="The balance and reservation now, and for each UTC day from `from` to `to` (at most 366 days; "
    "default: the last 30 days) the charges of the usage ledger: replies charged, credits, tokens.",
    tags=["usage"],
    parameters=[
        OpenApiParameter("from", OpenApiTypes.DATE, OpenApiParameter.QUERY, description="First day, YYYY-MM-DD."),
        OpenApiParameter(
            "to", OpenApiTypes.DATE, OpenApiParameter.QUERY, description="Last day, YYYY-MM-DD (today by default)."
        ),
    ],
    responses={**_ok(UsageResultSerializer, "The usage.", "usage"), **_read_errors()},
)


# --- POST /api/v1/conversations/{conversationId}/close -------------------------------------------------


class ConversationCloseResult(serializers.Serializer):
    """The closed conversation: the same object as the messages endpoint's `conversation`."""

    success = serializers.BooleanField()
    conversation = ConversationSerializer()


_REPLY_CONVERSATION: dict[str, Any] = REPLY_EXAMPLE["conversation"]  # type: ignore[assignment]
CLOSE_EXAMPLE = {
    "success": True,
    "conversation": {
        **_REPLY_CONVERSATION,
        "status": "CLOSED",
        "closedAt": "2026-11-25T19:02:11.031Z",
        "closeReason": "api",
    },
}

conversation_close_schema = extend_schema(
    operation_id="conversation_close",
    summary="Close a conversation",
    description=(
        'Closes the conversation (`closeReason: "api"`) and answers it. Idempotent: closing a closed '
        "conversation answers it unchanged, whatever closed it. The contact's next message on the channel "
        "opens a new conversation, whose history starts empty. A message of the conversation still being "
        "answered is answered, in this conversation, which stays closed. A channel with a webhook gets a "
        "`conversation.closed` event, once per close. Requests per minute per API key are limited (429 with "
        "`Retry-After`)."
    ),
    tags=["conversations"],
    request=None,
    parameters=[
        OpenApiParameter(
            "conversationId",
            OpenApiTypes.STR,
            OpenApiParameter.PATH,
            description="The id of a conversation of your workspace (`cv_…`), as the messages endpoint answered it.",
        ),
        *(parameter for parameter in PARAMETERS if parameter.name in {"X-Request-ID", "Retry-After"}),
    ],
    responses={
        200: OpenApiResponse(
            response=ConversationCloseResult,
            description="The conversation is closed (now, or it already was).",
            examples=[OpenApiExample("Closed", value=CLOSE_EXAMPLE, status_codes=[200], response_only=True)],
        ),
        401: RESPONSES[401],
        404: _error(
            404,
            "No such conversation in the key's workspace.",
            {
                ConversationNotFound: (
                    "No conversation with this id in your workspace (another workspace's are not found either).",
                    {"conversationId": "cv_doesnotexist"},
                ),
            },
        ),
        429: RESPONSES[429],
        500: RESPONSES[500],
        503: RESPONSES[503],
    },
)


# --- the agent's knowledge (api/edge/knowledge_views.py) ----------------------------------------------------------

_DOCUMENT_EXAMPLE = {
    "id": "refund-policy",
    "title": "Refunds",
    "url": None,
    "status": "READY",
    "chunks": 2,
    "chars": 1840,
    "errorCode": None,
    "createdAt": "2026-11-25T18:50:02.113Z",
    "updatedAt": "2026-11-25T18:50:02.113Z",
}
_DOCUMENT_URL_EXAMPLE = {
    **_DOCUMENT_EXAMPLE,
    "id": "shipping",
    "title": "Shipping",
    "url": "https://shop.example.com/help/shipping",
    "status": "PROCESSING",
    "chunks": 0,
    "chars": 0,
}
READ_EXAMPLES.update(
    {
        "agents": {
            "success": True,
            "data": [
                {
                    "id": "ag_01m8a0tew84ky5vn4web71wcec",
                    "name": "Demo agent",
                    "provider": "builtin",
                    "model": None,
                    "documents": 4,
                    "updatedAt": "2026-11-25T18:40:00.000Z",
                }
            ],
            "nextCursor": None,
        },
        "document": {"success": True, "document": _DOCUMENT_EXAMPLE},
        "documents": {"success": True, "data": [_DOCUMENT_EXAMPLE], "nextCursor": None},
        "deleted": {"success": True},
    }
)
_AGENT_404 = (AgentNotFound, "No AI agent with this id in your workspace.", "agentId")
_DOCUMENT_PATH = [
    OpenApiParameter("agentId", OpenApiTypes.STR, OpenApiParameter.PATH, description="An agent of your workspace."),
    OpenApiParameter(
        "documentId",
        OpenApiTypes.STR,
        OpenApiParameter.PATH,
        description="Your id for the document: 1-128 of A-Z a-z 0-9 . _ : -",
    ),
]


def _document_errors(*extra: type[ApplicationError]) -> dict[int, OpenApiResponse]:
    responses = _read_errors()
    responses[404] = _error(
        404,
        "No such agent or document.",
        {
            AgentNotFound: ("No AI agent with this id in your workspace.", {"agentId": "ag_doesnotexist"}),
            DocumentNotFound: ("The agent has no document with this id.", {"documentId": "refund-policy"}),
        },
    )
    for status in sorted({error.status_code for error in extra}):
        errors: dict[type[ApplicationError], tuple[str, dict]] = {
            error: (error.default_message, {}) for error in extra if error.status_code == status
        }
        responses[status] = _error(status, "The document is refused.", errors)
    return responses


agent_list_schema = extend_schema(
    operation_id="agent_list",
    summary="The workspace's AI agents, newest first",
    tags=["knowledge"],
    parameters=_PAGING,
    responses={**_ok(AgentPageSerializer, "A page of agents.", "agents"), **_read_errors()},
)
document_list_schema = extend_schema(
    operation_id="document_list",
    summary="An agent's documents, newest first",
    tags=["knowledge"],
    parameters=_PAGING,
    responses={**_ok(DocumentPageSerializer, "A page of documents.", "documents"), **_read_errors(_AGENT_404)},
)
document_get_schema = extend_schema(
    operation_id="document_get",
    summary="One of an agent's documents",
    tags=["knowledge"],
    parameters=_DOCUMENT_PATH,
    responses={**_ok(DocumentResultSerializer, "The document.", "document"), **_document_errors()},
)
document_put_schema = extend_schema(
    operation_id="document_put",
    summary="Create or replace a document of the agent's knowledge",
    description="`{title, text}` (plain text or Markdown, at most 1 MB) is split into passages at its headings, "
    "paragraphs and list items and indexed before the answer: 200 with `status: READY`. `{title, url}` is "
    "fetched in the background under the media download's address rules (HTML reduced to its readable text, "
    "PDF, plain text or Markdown; at most 10 MB): 202 with `status: PROCESSING`, then `READY`, or `FAILED` with "
    "`errorCode`. The same content again changes nothing (`updatedAt` stays); new content replaces the old "
    "passages at once, and no message is ever answered from half of each.",
    tags=["knowledge"],
    parameters=_DOCUMENT_PATH,
    request=DocumentPutSerializer,
    examples=[
        OpenApiExample(
            "Text",
            request_only=True,
            value={
                "title": "Refunds",
                "text": "# Refunds\n\nYou can ask for a refund within 30 days of purchase.",
                "metadata": {"lang": "en"},
            },
        ),
        OpenApiExample(
            "URL", request_only=True, value={"title": "Shipping", "url": "https://shop.example.com/help/shipping"}
        ),
    ],
    responses={
        **_ok(DocumentResultSerializer, "Indexed (text).", "document"),
        202: OpenApiResponse(
            response=DocumentResultSerializer,
            description="Accepted (url): fetched and indexed in the background.",
            examples=[
                OpenApiExample(
                    "Processing",
                    value={"success": True, "document": _DOCUMENT_URL_EXAMPLE},
                    status_codes=[202],
                    response_only=True,
                )
            ],
        ),
        **_document_errors(DocumentTooLarge, PayloadTooLarge, DocumentEmpty, KnowledgeFull, IndexingTimeout),
    },
)
document_delete_schema = extend_schema(
    operation_id="document_delete",
    summary="Delete a document",
    description="Its passages are gone for the agent's next message.",
    tags=["knowledge"],
    parameters=_DOCUMENT_PATH,
    responses={**_ok(DeletedSerializer, "Deleted.", "deleted"), **_document_errors()},
)
