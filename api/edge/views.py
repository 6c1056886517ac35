from django.http import HttpResponse, HttpResponseBase, StreamingHttpResponse
from rest_framework.views import APIView

from api.edge.parsers import MAX_JSON_DEPTH, BodyRequest, BoundedJSONParser
from api.edge.schema import message_create_schema
from api.flow.idempotency import InvalidIdempotencyKey, idempotency_key_validate, request_fingerprint
from api.flow.messaging import InboundRequest
from api.flow.post import message_post
from api.flow.streaming import CONTENT_TYPE as EVENT_STREAM
from api.flow.streaming import replay_events
from api.serializers import InboundMessageSerializer
from channels_app.authentication import ApiKeyAuthentication
from config.logs import log_bind
from config.metrics import message_observe

__all__ = ["MAX_JSON_DEPTH", "ChannelMessageCreateApi"]


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
    parser_classes = [BoundedJSONParser]
    payload: InboundMessageSerializer | None = None  # once the body is read: the metrics label's source

    def initialize_request(self, request, *args, **kwargs):
        return BodyRequest(
            request,
            parsers=self.get_parsers(),
            authenticators=self.get_authenticators(),
            negotiator=self.get_content_negotiator(),
            parser_context=self.get_parser_context(request),
        )

    def initial(self, request, *args, **kwargs):
        log_bind(channel_id=kwargs.get("channelId"))
        super().initial(request, *args, **kwargs)  # authenticates, then throttles

    def perform_authentication(self, request):
        super().perform_authentication(request)
        log_bind(workspace_id=request.auth.workspace_id, api_key_prefix=request.auth.prefix)

    def finalize_response(self, request, response, *args, **kwargs):
        message_observe(type=self.payload.message_type if self.payload else None, status=response.status_code)
        return super().finalize_response(request, response, *args, **kwargs)

    @message_create_schema
    def post(self, request, channelId: str):
        body = request.data
        self.payload = payload = InboundMessageSerializer(data=body)
        idempotency_key = _idempotency_key(request)
        payload.is_valid(raise_exception=True)
        respond_async = _prefers_async(request)
        stream = not respond_async and _wants_stream(request)  # respond-async wins: its answer is the 202
        result = message_post(
            inbound=InboundRequest(
                workspace=request.auth.workspace,
                channel_id=channelId,
                idempotency_key=idempotency_key,
                fingerprint=request_fingerprint(method="POST", path=request.path, channel_id=channelId, body=body),
                **payload.validated_data,
            ),
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
