"""The idempotency records in the admin: read-only history (config.admin_base)."""

from django.contrib import admin
from django.utils.html import format_html

from api.models import IdempotencyRecord
from config.admin_base import HistoryAdmin
from conversations.admin import message_admin_link


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(HistoryAdmin):
    list_display = ["key", "workspace", "state", "response_status", "created_at", "expires_at"]
    list_select_related = ["workspace"]
    list_filter = ["state", "workspace", "created_at"]
    search_fields = ["=key", "=id", "=message__id"]
    # Ids are ULIDs, so the primary key's index gives creation order without sorting the table.
    ordering = ["-id"]
    fields = readonly_fields = (
        "id",
        "workspace",
        "key",
        "fingerprint",
        "state",
        "owner",
        "locked_until",
        "expires_at",
        "message_link",
        "response_status",
        "response",
        "created_at",
        "updated_at",
    )

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("workspace")

    @admin.display(description="message")
    def message_link(self, obj: IdempotencyRecord) -> str:
        return message_admin_link(obj.message_id)

    @admin.display(description="response body")
    def response(self, obj: IdempotencyRecord) -> str:
        if obj.response_body is None:
            return "-"
        return format_html(
            '<pre style="white-space: pre-wrap">{}</pre>', bytes(obj.response_body).decode("utf-8", errors="replace")
        )
