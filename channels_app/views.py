import json

from django.conf import settings
from django.http import HttpResponse
from rest_framework.views import APIView

from channels_app.authentication import ApiKeyAuthentication
from channels_app.idempotency import idempotency_key_validate, request_fingerprint
from channels_app.messaging import message_post
from channels_app.serializers import InboundMessageSerializer
from config.errors import InvalidRequest, PayloadTooLarge


def _json_body(request) -> dict:
    """The body as a JSON object. Parsed here rather than by DRF's parsers so the size limit holds before
    anything is read and every failure gets the contract's error body."""
    length = request.META.get("CONTENT_LENGTH") or "0"
    if length == "0" and "chunked" not in request.META.get("HTTP_TRANSFER_ENCODING", ""):
        raise InvalidRequest("The body is empty. Send a JSON object with type, contactIdentifier and content.",
                             details={"body": "missing"})
    content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise InvalidRequest(
            "Send the body as JSON with the header Content-Type: application/json.",
            details={"Content-Type": content_type or "(missing)"},
        )
    if length.isdigit() and int(length) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        raise PayloadTooLarge(
            f"The body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes. Send media by URL, "
            "not inline, and keep text under the documented limits.",
            details={"limitBytes": settings.DATA_UPLOAD_MAX_MEMORY_SIZE},
        )
    try:
        data = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidRequest("The body is not valid JSON. Send a JSON object.", details={"body": str(error)}) from None
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object with type, contactIdentifier and content.",
                             details={"body": f"got {type(data).__name__ if data is not None else 'nothing'}"})
    return data


class ChannelMessageCreateApi(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes: list = []

    def post(self, request, channel_id: str):
        api_key = request.auth
        data = _json_body(request._request)
        raw_key = request.META.get("HTTP_X_IDEMPOTENCY_KEY", request.META.get("HTTP_IDEMPOTENCY_KEY"))
        idempotency_key = idempotency_key_validate(raw_key) if raw_key is not None else None
        payload = InboundMessageSerializer(data=data)
        payload.is_valid(raise_exception=True)
        values = payload.validated_data
        result = message_post(
            workspace=api_key.workspace,
            channel_id=channel_id,
            contact_identifier=values["contactIdentifier"],
            contact_name=values.get("contactName", ""),
            type=values["type"],
            content=values["content"],
            idempotency_key=idempotency_key,
            fingerprint=request_fingerprint(method="POST", path=request.path, channel_id=channel_id, body=data),
        )
        response = HttpResponse(result.body, status=result.status, content_type="application/json")
        if result.replayed:
            response["Idempotent-Replayed"] = "true"
        return response
