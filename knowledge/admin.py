"""The operators' side of the agent's knowledge (README "The agent's knowledge"): add a document (pasted
text or an uploaded file: Markdown, plain text, HTML or PDF), replace it, delete it, and read its passages.
Every write goes through knowledge.services, as the API's do: indexed at once, one agent at a time."""

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from channels_app.models import AIAgent
from config.errors import ApplicationError
from conversations.media.extract import pdf_text_extract
from conversations.media.inspect import media_sniff, text_decode
from knowledge.html_text import html_text
from knowledge.models import Document, Passage
from knowledge.services import DOCUMENT_KEY, PDF_MAX_PAGES, document_chunks, document_delete, document_put_text


class DocumentForm(forms.ModelForm):
    upload = forms.FileField(
        required=False,
        help_text="Markdown, plain text, HTML or PDF; its text replaces what is pasted above.",
    )

    class Meta:
        model = Document
        fields = ["agent", "key", "title", "text"]
        widgets = {"text": forms.Textarea(attrs={"rows": 20, "cols": 100})}

    def clean_key(self) -> str:
        key = self.cleaned_data["key"]
        if not DOCUMENT_KEY.fullmatch(key):
            raise ValidationError("1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'.")
        return key

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        upload = cleaned.get("upload")
        if upload is not None:
            if upload.size > settings.MEDIA_MAX_BYTES:
                raise ValidationError({"upload": "The file is larger than 10 MB."})
            cleaned["text"] = _file_text(upload.read(), name=upload.name or "")
        if not (cleaned.get("text") or "").strip():
            raise ValidationError({"text": "Paste the document's text or upload a file."})
        try:
            document_chunks(cleaned["text"], field="text")
        except ApplicationError as error:
            raise ValidationError({"text": error.message}) from None
        return cleaned

    def validate_unique(self) -> None:
        """A document id the agent already has is a replacement (as a PUT), not a clash."""


def _file_text(data: bytes, *, name: str) -> str:
    limit = settings.KNOWLEDGE_MAX_TEXT_BYTES + 1
    sniffed = media_sniff(data=data)
    if sniffed == "application/pdf":
        return pdf_text_extract(data=data, max_pages=PDF_MAX_PAGES, limit_chars=limit).text
    if sniffed in ("text/html", "application/xhtml+xml") or name.lower().endswith((".html", ".htm")):
        return html_text(text_decode(data=data, limit_chars=len(data)), limit_chars=limit)[0]
    if sniffed.startswith("text/") or sniffed == "application/x-empty":
        return text_decode(data=data, limit_chars=limit)
    raise ValidationError({"upload": f"The file is {sniffed}: upload Markdown, plain text, HTML or PDF."})


class PassageInline(admin.TabularInline):
    model = Passage
    fields = ["position", "heading", "text"]
    readonly_fields = ["position", "heading", "text"]
    extra = 0
    can_delete = False
    show_change_link = False

    # Shown, never edited: the passages are the index's (knowledge.services), not the form's.
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


_INDEX_FIELDS = ["url", "status", "error_code", "chunks", "chars", "language", "created_at", "updated_at"]


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    form = DocumentForm
    inlines = [PassageInline]
    list_display = ["title", "key", "agent", "status", "chunks", "chars", "updated_at"]
    list_select_related = ["agent"]
    list_filter = ["status", "agent"]
    search_fields = ["=key", "title"]
    readonly_fields = ["url", "status", "error_code", "chunks", "chars", "language", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["agent", "key", "title", "text", "upload"]}),
        (
            "Index",
            {"fields": ["url", "status", "error_code", "chunks", "chars", "language", "created_at", "updated_at"]},
        ),
    ]

    def get_inlines(self, request: HttpRequest, obj: Document | None) -> list[type[admin.options.InlineModelAdmin]]:
        return [PassageInline] if obj is not None else []  # a new document has no passages yet

    def get_readonly_fields(self, request: HttpRequest, obj: Document | None = None) -> list[str]:
        fields = [str(name) for name in self.readonly_fields]
        return [*fields, "agent", "key"] if obj is not None else fields

    def save_model(self, request: HttpRequest, obj: Document, form: forms.ModelForm, change: bool) -> None:
        agent = obj.agent if change else form.cleaned_data["agent"]
        try:
            document, _ = document_put_text(
                agent=AIAgent.objects.get(pk=agent.pk),
                key=obj.key,
                title=form.cleaned_data["title"],
                text=form.cleaned_data["text"],
                metadata=obj.metadata if change else {},
            )
        except ApplicationError as error:
            messages.error(request, error.message)
            document = Document.objects.filter(agent=agent, key=obj.key).first() or obj
        obj.pk, obj._state.adding = document.pk, False

    def delete_model(self, request: HttpRequest, obj: Document) -> None:
        document_delete(agent=obj.agent, key=obj.key)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        for document in queryset.select_related("agent"):
            document_delete(agent=document.agent, key=document.key)
