"""Shared admin building blocks. They live in `config` (like the error tree's base class) because the admin of
every app that keeps history uses them, and an app imports only from the layers before it (README "Layout")."""

from django.contrib import admin


class ReadOnlyAdminMixin:
    """History is a record of what happened: operators list, search, filter and open it, and nobody, not even
    a superuser, adds, changes or deletes it from the admin. Without the change permission Django renders
    the change view as a read-only detail page (the view permission is enough to open it)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class HistoryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """A read-only admin for a table that grows without bound."""

    # Counting every row of a large table on each page load is a full scan; the filtered count is enough.
    show_full_result_count = False
    list_per_page = 50

    class Media:
        css = {"all": ["backoffice/lists.css"]}
