"""`POST /api/v1/conversations/{conversationId}/close` (README "Conversations"): the same key, rate limit and
error body as the messages endpoint."""

from django.http import HttpResponse
from rest_framework.views import APIView

from api.edge.schema import conversation_close_schema
from api.flow.messaging import render
from api.maintenance.conversations import conversation_close_request
from channels_app.authentication import ApiKeyAuthentication
from config.logs import log_bind


class ConversationCloseApi(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes: list = []

    def initial(self, request, *args, **kwargs):
        log_bind(conversation_id=kwargs.get("conversationId"))
        super().initial(request, *args, **kwargs)  # authenticates, then throttles

    def perform_authentication(self, request):
        super().perform_authentication(request)
        log_bind(workspace_id=request.auth.workspace_id, api_key_prefix=request.auth.prefix)

    @conversation_close_schema
    def post(self, request, conversationId: str):
        conversation = conversation_close_request(
            workspace_id=request.auth.workspace_id, conversation_id=conversationId
        )
        return HttpResponse(
            render({"success": True, "conversation": conversation}), status=200, content_type="application/json"
        )
