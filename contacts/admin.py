from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from config.admin_base import HistoryAdmin
from contacts.models import Contact


@admin.register(Contact)
class ContactAdmin(HistoryAdmin):
    # Fits 1400 px with the navigation sidebar open: the id is on the contact's page (and searchable).
    list_display = ["identifier", "name", "workspace", "created_at"]
    list_select_related = ["workspace"]
    list_filter = ["workspace", "created_at"]
    search_fields = ["=id", "identifier", "name"]
    # Ids are ULIDs, so the primary key's index gives creation order without sorting the table.
    ordering = ["-id"]
    fields = readonly_fields = (
        "id",
        "workspace",
        "identifier",
        "identifier_key",
        "name",
        "attributes",
        "conversations",
        "created_at",
        "updated_at",
    )

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("workspace")

    @admin.display(description="conversations")
    def conversations(self, obj: Contact) -> str:
        # A link, not an inline: a contact may have many conversations, and the list pages them.
        url = reverse("admin:conversations_conversation_changelist")
        return format_html('<a href="{}?contact__id__exact={}">The contact\u2019s conversations</a>', url, obj.pk)
