import json
import re
from itertools import accumulate

from django.conf import settings
from django.http import HttpResponse, HttpResponseBase, StreamingHttpResponse
from rest_framework.views import APIView

from api.idempotency import InvalidIdempotencyKey, idempotency_key_validate, request_fingerprint
from api.messaging import message_post
from api.schema import message_create_schema
from api.serializers import InboundMessageSerializer
from api.streaming import CONTENT_TYPE as EVENT_STREAM
from api.streaming import replay_events
from channels_app.authentication import ApiKeyAuthentication
from config.errors import InvalidRequest, PayloadTooLarge
from config.logs import log_bind
from config.metrics import message_observe
from config.text import text_unstorable_reason


def _body_bytes(request) -> bytes:
    """The raw body, at most the limit plus one byte. Django reads a WSGI body only up to Content-Length;
    a chunked body has none, so it is read from the server's decoded stream (gunicorn marks it
    `wsgi.input_terminated`), bounded the same way."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if not request.META.get("CONTENT_LENGTH") and request.META.get("wsgi.input_terminated"):
        return request.META["wsgi.input"].read(limit + 1)
    return request.body  # raises RequestDataTooBig (413) past the limit


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes. Send media by URL, "
        "not inline, and keep text under the documented limits.",
        details={"limitBytes": settings.DATA_UPLOAD_MAX_MEMORY_SIZE},
    )


# The deepest valid body is content.<type>.<field>, three objects deep; ten leaves room for any field the
# contract adds, far below the roughly 900 levels at which the parser and the fingerprint's encoder (both
# recursive) raise RecursionError.
MAX_JSON_DEPTH = 10
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _nesting_exceeds(text: str, limit: int) -> bool:
    """Whether the brackets outside strings nest deeper than `limit`, counted without recursion and
    before anything recursive (the parser) reads the text; in C loops (regex, map, accumulate), so 64 KiB of
    brackets costs about 2 ms. Only valid JSON is counted exactly: in a broken text the verdict may differ
    from the parser's, and either way the body is refused."""
    brackets = _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0) > limit


def _unstorable_text(data: object) -> tuple[str, str] | None:
    """The first string, key or value, anywhere in the parsed body that the database could not hold
    (config/text.py), as (where, why); None when there is none. Iterative: the depth is already bounded,
    but nothing here relies on it. `where` names the field by the keys that lead to it and never repeats
    the bad string: a bad key is reported at the object that holds it ("body" at the top)."""
    pending: list[tuple[str, object]] = [("", data)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, str):
            reason = text_unstorable_reason(value)
            if reason is not None:
                return where or "body", reason
        elif isinstance(value, dict):
            for key, item in value.items():
                reason = text_unstorable_reason(key)
                if reason is not None:
                    return where or "body", f"a field name {reason}"
                pending.append((f"{where}.{key}" if where else key, item))
        elif isinstance(value, list):
            pending.extend((f"{where}[{index}]", item) for index, item in enumerate(value))
    return None


def _json_body(request) -> dict:
    """The body as a JSON object. Parsed here rather than by DRF's parsers so the size limit holds before
    anything is read and every failure gets the contract's error body."""
    length = request.META.get("CONTENT_LENGTH") or "0"
    if length == "0" and "chunked" not in request.META.get("HTTP_TRANSFER_ENCODING", ""):
        raise InvalidRequest(
            "The body is empty. Send a JSON object with type, contactIdentifier and content.",
            details={"body": "missing"},
        )
    content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise InvalidRequest(
            "Send the body as JSON with the header Content-Type: application/json.",
            details={"Content-Type": content_type or "(missing)"},
        )
    if length.isdigit() and int(length) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        raise _too_large()
    body = _body_bytes(request)
    if len(body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        raise _too_large()
    try:
        # Strictly UTF-8 (RFC 8259 section 8.1; a leading BOM is tolerated): json.loads on bytes would also
        # take UTF-16 or UTF-32 and let UTF-8-encoded surrogates through.
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidRequest(
            "The body is not UTF-8 text. Send JSON encoded as UTF-8.",
            details={"body": f"not UTF-8 at byte {error.start}"},
        ) from None
    if _nesting_exceeds(text, MAX_JSON_DEPTH):
        raise InvalidRequest(
            f"The body nests objects or arrays more than {MAX_JSON_DEPTH} levels deep. "
            "Send a JSON object shaped like the documented ones.",
            details={"body": f"nested deeper than {MAX_JSON_DEPTH} levels"},
        )
    try:
        data = json.loads(text or "null")
    except ValueError as error:
        raise InvalidRequest("The body is not valid JSON. Send a JSON object.", details={"body": str(error)}) from None
    unstorable = _unstorable_text(data)
    if unstorable is not None:
        where, reason = unstorable
        raise InvalidRequest(
            f"The request has invalid fields: {where}. Send text without U+0000 (NUL) and without unpaired "
            "UTF-16 surrogates.",
            details={where: reason},
        )
    if not isinstance(data, dict):
        raise InvalidRequest(
            "The body must be a JSON object with type, contactIdentifier and content.",
            details={"body": f"got {type(data).__name__ if data is not None else 'nothing'}"},
        )
    return data


def _idempotency_key(request) -> str | None:
    """`X-Idempotency-Key` or the IETF draft's `Idempotency-Key`. Each one sent must be valid, and both
    sent must agree: silently preferring one would hide a client's bug until a retry went wrong."""
    keys = {
        idempotency_key_validate(request.META[name])
        for name in ("HTTP_X_IDEMPOTENCY_KEY", "HTTP_IDEMPOTENCY_KEY")
        if name in request.META
    }
    if len(keys) > 1:
        raise InvalidIdempotencyKey(
            "X-Idempotency-Key and Idempotency-Key differ. Send one of them, or the same key in both.",
            details={"header": "Idempotency-Key"},
        )
    return keys.pop() if keys else None


def _prefers_async(request) -> bool:
    """`Prefer: respond-async` (RFC 7240), among other preferences and with parameters or not."""
    preferences = (
        item.split(";")[0].split("=")[0].strip().lower() for item in request.META.get("HTTP_PREFER", "").split(",")
    )
    return "respond-async" in preferences


def _wants_stream(request) -> bool:
    """`Accept: text/event-stream` among the media ranges, with q > 0."""
    for item in request.META.get("HTTP_ACCEPT", "").split(","):
        media, *params = (part.strip().lower() for part in item.split(";"))
        if media == EVENT_STREAM and not any(
            param.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for param in params
        ):
            return True
    return False


class ChannelMessageCreateApi(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes: list = []

    def initial(self, request, *args, **kwargs):
        log_bind(channel_id=kwargs.get("channelId"))
        super().initial(request, *args, **kwargs)  # authenticates, then throttles

    def perform_authentication(self, request):
        super().perform_authentication(request)
        log_bind(workspace_id=request.auth.workspace_id, api_key_prefix=request.auth.prefix)

    def perform_content_negotiation(self, request, force=False):
        # The JSON renderer for the errors of a request that asks for a stream, instead of 406.
        return super().perform_content_negotiation(request, force=force or _wants_stream(request))

    def finalize_response(self, request, response, *args, **kwargs):
        message_observe(type=getattr(request, "message_type", None), status=response.status_code)
        return super().finalize_response(request, response, *args, **kwargs)

    @message_create_schema
    def post(self, request, channelId: str):
        channel_id = channelId
        api_key = request.auth
        data = _json_body(request._request)
        request.message_type = data.get("type")
        idempotency_key = _idempotency_key(request)
        payload = InboundMessageSerializer(data=data)
        payload.is_valid(raise_exception=True)
        values = payload.validated_data
        respond_async = _prefers_async(request)
        stream = not respond_async and _wants_stream(request)  # respond-async wins: its answer is the 202
        result = message_post(
            workspace=api_key.workspace,
            channel_id=channel_id,
            contact_identifier=values["contactIdentifier"],
            contact_name=values.get("contactName") or "",
            type=values["type"],
            content=values["content"],
            metadata=values.get("metadata") or {},
            idempotency_key=idempotency_key,
            fingerprint=request_fingerprint(method="POST", path=request.path, channel_id=channel_id, body=data),
            respond_async=respond_async,
            stream=stream,
        )
        response: HttpResponseBase
        if stream and (result.events is not None or result.status == 200):
            response = StreamingHttpResponse(result.events or replay_events(result.body), content_type=EVENT_STREAM)
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"  # a proxy (nginx) passes each event on at once
        else:
            response = HttpResponse(result.body, status=result.status, content_type="application/json")
        for name, value in result.headers.items():
            response[name] = value
        if result.replayed:
            response["Idempotent-Replayed"] = "true"
        return response
