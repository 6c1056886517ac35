import json

from django.conf import settings
from django.http import HttpResponse
from rest_framework.views import APIView

from channels_app.authentication import ApiKeyAuthentication
from channels_app.idempotency import idempotency_key_validate, request_fingerprint
from channels_app.messaging import message_post
from channels_app.schema import message_create_schema
from channels_app.serializers import InboundMessageSerializer
from config.errors import InvalidIdempotencyKey, InvalidRequest, PayloadTooLarge
from config.logs import log_bind
from config.metrics import message_observe


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
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidRequest("The body is not valid JSON. Send a JSON object.", details={"body": str(error)}) from None
    except RecursionError:
        raise InvalidRequest(
            "The body nests too deeply. Send a JSON object shaped like the documented ones.",
            details={"body": "too deeply nested"},
        ) from None
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


class ChannelMessageCreateApi(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes: list = []

    def initial(self, request, *args, **kwargs):
        log_bind(channel_id=kwargs.get("channelId"))
        super().initial(request, *args, **kwargs)  # authenticates, then throttles

    def perform_authentication(self, request):
        super().perform_authentication(request)
        log_bind(workspace_id=request.auth.workspace_id, api_key_prefix=request.auth.prefix)

    def finalize_response(self, request, response, *args, **kwargs):
        message_observe(type=getattr(request, "message_type", None), status=response.status_code)
        return super().finalize_response(request, response, *args, **kwargs)

    @message_create_schema
    def post(self, request, channelId: str):  # noqa: N803 - the spec's path parameter, named so in the schema
        channel_id = channelId
        api_key = request.auth
        data = _json_body(request._request)
        request.message_type = data.get("type")
        idempotency_key = _idempotency_key(request)
        payload = InboundMessageSerializer(data=data)
        payload.is_valid(raise_exception=True)
        values = payload.validated_data
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
        )
        response = HttpResponse(result.body, status=result.status, content_type="application/json")
        if result.replayed:
            response["Idempotent-Replayed"] = "true"
        return response
