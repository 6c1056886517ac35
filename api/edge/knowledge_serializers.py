"""The knowledge API's bodies (api/edge/knowledge_views.py): the PUT's request, and the answers' shapes, which the
views render from `document_view` / `agent_view` and the OpenAPI document (api/edge/schema.py) describes."""

from typing import Any

from rest_framework import serializers

from api.serializers import _Page, _PublicUrlField, _StrictObject, _StringField, _text, iso, metadata_field
from channels_app.models import AIAgent
from knowledge.models import Document

TITLE_MAX = 500


class DocumentPutSerializer(_StrictObject):
    """`{"title", "text"}` or `{"title", "url"}`, optional `metadata`."""

    title = _text(TITLE_MAX, help_text="Shown to the agent with each passage, and in `sources`.")
    text = _StringField(
        required=False,
        allow_null=True,
        trim_whitespace=False,
        help_text="Plain text or Markdown, at most 1 MB (UTF-8): indexed before the answer (200).",
    )
    url = _PublicUrlField(
        required=False,
        allow_null=True,
        help_text="An HTML page, PDF, plain text or Markdown file of at most 10 MB, fetched in the background "
        "under the media download's address rules (202).",
    )
    metadata = metadata_field(default=dict)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("text" in attrs) == ("url" in attrs):
            raise serializers.ValidationError(
                {"text": ["Send either text (plain text or Markdown) or url (a page or file to fetch), not both."]}
            )
        return attrs


class DocumentSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The documentId it was PUT with.")
    title = serializers.CharField()
    url = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(choices=Document.Status.values)
    chunks = serializers.IntegerField(help_text="Its passages.")
    chars = serializers.IntegerField(help_text="Characters of text in its passages.")
    errorCode = serializers.CharField(allow_null=True, help_text="Why it FAILED; null otherwise.")
    createdAt = serializers.CharField()
    updatedAt = serializers.CharField(help_text="When its content last changed; the same content again keeps it.")


class DocumentResultSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    document = DocumentSerializer()


class DocumentPageSerializer(_Page):
    data = DocumentSerializer(many=True)


class AgentSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    provider = serializers.CharField()
    model = serializers.CharField(allow_null=True)
    documents = serializers.IntegerField()
    updatedAt = serializers.CharField()


class AgentPageSerializer(_Page):
    data = AgentSerializer(many=True)


class DeletedSerializer(serializers.Serializer):
    success = serializers.BooleanField()


def document_view(document: Document) -> dict[str, Any]:
    return {
        "id": document.key,
        "title": document.title,
        "url": document.url or None,
        "status": document.status,
        "chunks": document.chunks,
        "chars": document.chars,
        "errorCode": document.error_code or None,
        "createdAt": iso(document.created_at),
        "updatedAt": iso(document.updated_at),
    }


def agent_view(agent: AIAgent) -> dict[str, Any]:
    return {
        "id": agent.pk,
        "name": agent.name,
        "provider": agent.provider,
        "model": agent.model or None,
        "documents": agent.knowledge_documents,
        "updatedAt": iso(agent.updated_at),
    }
