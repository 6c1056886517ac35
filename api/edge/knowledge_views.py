"""The agent's knowledge API (README "The agent's knowledge"): the workspace's agents, and each agent's
documents. Same key, rate limit, scoping and error body as the read API (another workspace's ids answer
404); thin views over knowledge.services."""

from datetime import UTC, datetime

from django.http import HttpResponse

from api.edge.knowledge_serializers import DocumentPutSerializer, agent_view, document_view
from api.edge.parsers import BodyRequest, DocumentJSONParser
from api.edge.read_views import _json, _page, _ReadApi, _time_cursor, _time_key
from api.edge.schema import (
    agent_list_schema,
    document_delete_schema,
    document_get_schema,
    document_list_schema,
    document_put_schema,
)
from channels_app.models import AIAgent
from config.errors import InvalidRequest
from config.logs import log_bind
from config.pagination import cursor_decode, page_limit
from knowledge.errors import AgentNotFound
from knowledge.services import (
    agent_for_workspace,
    document_delete,
    document_get,
    document_key_check,
    document_list,
    document_put_text,
    document_put_url,
)


class AgentListApi(_ReadApi):
    @agent_list_schema
    def get(self, request):
        limit = page_limit(request.query_params.get("limit"))
        after = _time_key(request.query_params.get("cursor"))
        queryset = AIAgent.objects.filter(workspace_id=request.auth.workspace_id)
        if after is not None:
            at, last = after
            queryset = queryset.filter(created_at__lte=at).exclude(created_at=at, id__gte=last)
        rows = list(queryset.order_by("-created_at", "-id")[: limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        next_key = _time_cursor(rows[-1].created_at, rows[-1].pk) if more else None
        return _page([agent_view(agent) for agent in rows], next_key=next_key)


class _AgentApi(_ReadApi):
    not_found = AgentNotFound

    def agent(self, request, agent_id: str) -> AIAgent:
        return agent_for_workspace(workspace_id=request.auth.workspace_id, agent_id=agent_id)


class AgentDocumentListApi(_AgentApi):
    @document_list_schema
    def get(self, request, agentId: str):
        limit = page_limit(request.query_params.get("limit"))
        key = cursor_decode(request.query_params.get("cursor"), shape=(str, int))
        agent = self.agent(request, agentId)
        after = None
        if key is not None:
            try:
                if not 0 < key[1] < 2**63:  # a bigint: never sent to the database out of its range
                    raise ValueError(key[1])
                after = (datetime.fromisoformat(key[0]).astimezone(UTC), key[1])
            except (ValueError, OverflowError):
                raise InvalidRequest(
                    "The cursor is not one this list gave out. Send the nextCursor of the previous page "
                    "unchanged, or leave cursor out for the first page.",
                    details={"cursor": "invalid"},
                ) from None
        rows = document_list(agent=agent, after=after, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_key = [rows[-1].created_at.astimezone(UTC).isoformat(), rows[-1].pk] if more else None
        return _page([document_view(document) for document in rows], next_key=next_key)


class AgentDocumentApi(_AgentApi):
    parser_classes = [DocumentJSONParser]

    def initialize_request(self, request, *args, **kwargs):
        return BodyRequest(
            request,
            parsers=self.get_parsers(),
            authenticators=self.get_authenticators(),
            negotiator=self.get_content_negotiator(),
            parser_context=self.get_parser_context(request),
        )

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        log_bind(agent_id=kwargs.get("agentId"), document_id=kwargs.get("documentId"))

    @document_get_schema
    def get(self, request, agentId: str, documentId: str):
        document = document_get(agent=self.agent(request, agentId), key=documentId)
        return _json({"success": True, "document": document_view(document)})

    @document_put_schema
    def put(self, request, agentId: str, documentId: str):
        agent = self.agent(request, agentId)
        document_key_check(documentId)
        payload = DocumentPutSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        if "url" in data:
            document, _ = document_put_url(
                agent=agent, key=documentId, title=data["title"], url=data["url"], metadata=data["metadata"]
            )
            return _json({"success": True, "document": document_view(document)}, status=202)
        document, _ = document_put_text(
            agent=agent, key=documentId, title=data["title"], text=data["text"], metadata=data["metadata"]
        )
        return _json({"success": True, "document": document_view(document)})

    @document_delete_schema
    def delete(self, request, agentId: str, documentId: str) -> HttpResponse:
        document_delete(agent=self.agent(request, agentId), key=documentId)
        return _json({"success": True})
