"""The idempotency records in the admin: read-only history (config.admin_base); and the conversations'
"Close" action."""

from django.contrib import admin, messages
from django.utils.html import format_html

from api.maintenance.conversations import conversations_close_by_operator
from api.models import IdempotencyRecord
from config.admin_base import HistoryAdmin
from conversations.admin import ConversationAdmin, message_admin_link
from conversations.models import Conversation


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


class ConversationCloseAdmin(ConversationAdmin):
    """The conversations' admin (conversations.admin) with the "Close" action. It is registered from here
    because a close announces itself with the API's conversation object (api.maintenance.conversations), which the
    conversations app may not import (README "Layout"); this app's admin loads after that one."""

    actions = ["close"]

    def has_close_permission(self, request) -> bool:
        return request.user.has_perm("conversations.close_conversation")

    @admin.action(description="Close the selected conversations", permissions=["close"])
    def close(self, request, queryset):
        count = conversations_close_by_operator(conversation_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(
            request,
            f"{count} conversations closed (reason operator); those already closed are unchanged.",
            messages.SUCCESS,
        )


admin.site.unregister(Conversation)
admin.site.register(Conversation, ConversationCloseAdmin)
