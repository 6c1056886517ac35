"""The operators' back office for the workspace's configuration: workspaces, channels, AI agents with their
knowledge settings, API keys (all editable). The history is read-only, in the admin of the app that owns it
(contacts, conversations, billing, api; see config.admin_base)."""

import json
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.admin.options import get_content_type_for_model
from django.contrib.admin.utils import quote
from django.contrib.admin.views.main import ChangeList
from django.db import models
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from channels_app.models import (
    BURST_WINDOW_MAX_MS,
    AIAgent,
    Channel,
    Team,
    Workspace,
    WorkspaceApiKey,
)
from channels_app.validators import BUILTIN_ACTIONS

admin.site.site_header = "Channels API back office"
admin.site.site_title = "Channels API"
admin.site.index_title = "Operations"

# The library's own concrete APIKey model is unused (keys belong to a workspace): its admin would only
# confuse operators.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


def changelist_link(model: type[models.Model], label: str, **filters: str) -> str:
    # A query string, URL-encoded: the admin's quote() is for primary keys in paths ("_" becomes "_5F"), and
    # a filter value quoted that way matches nothing.
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    return format_html('<a href="{}?{}">{}</a>', url, urlencode(filters), label)


# --- configuration ----------------------------------------------------------------------------------------


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "id", "credit_balance", "credit_reserved", "created_at"]
    search_fields = ["=id", "name", "slug"]
    fields = [
        "id",
        "name",
        "slug",
        "rate_limit_per_minute",
        "credit_balance",
        "credit_reserved",
        "related",
        "created_at",
        "updated_at",
    ]
    readonly_fields = ["id", "credit_balance", "credit_reserved", "related", "created_at", "updated_at"]

    def has_delete_permission(self, request, obj=None):
        # Deleting a workspace would take its history with it; the ledger's PROTECT would refuse it anyway.
        return False

    @admin.display(description="related")
    def related(self, obj: Workspace) -> str:
        if obj.pk is None:
            return "-"
        return format_html_join(" \u00b7 ", "{}", ((link,) for link in self.related_links(obj)))

    def related_links(self, obj: Workspace) -> list[str]:
        """Links to the workspace's rows in other lists (billing.admin's WorkspaceAdmin adds the ledger)."""
        return [
            changelist_link(WorkspaceApiKey, "API keys", workspace__id__exact=obj.pk),
            changelist_link(Channel, "Channels", workspace__id__exact=obj.pk),
            changelist_link(Team, "Teams", workspace__id__exact=obj.pk),
            changelist_link(AIAgent, "AI agents", workspace__id__exact=obj.pk),
        ]


class ChannelAdminForm(forms.ModelForm):
    """The agent and the team must be the channel's workspace's: Channel.clean checks both."""

    _timeout = Channel._meta.get_field("inactivity_timeout_seconds")
    _burst_mode = Channel._meta.get_field("burst_mode")
    _burst_window = Channel._meta.get_field("burst_window_ms")
    # Left empty, the defaults (a day; queue; no window): a form posted without the fields keeps working.
    inactivity_timeout_seconds = forms.IntegerField(
        min_value=0, required=False, initial=_timeout.default, help_text=_timeout.help_text
    )
    burst_mode = forms.ChoiceField(
        choices=Channel.BurstMode.choices, required=False, initial=_burst_mode.default, help_text=_burst_mode.help_text
    )
    burst_window_ms = forms.IntegerField(
        min_value=0,
        max_value=BURST_WINDOW_MAX_MS,
        required=False,
        initial=_burst_window.default,
        help_text=_burst_window.help_text,
    )

    class Meta:
        model = Channel
        fields = [
            "workspace",
            "name",
            "type",
            "is_active",
            "agent",
            "team",
            "inactivity_timeout_seconds",
            "burst_mode",
            "burst_window_ms",
        ]

    def _or_default(self, name: str) -> Any:
        value = self.cleaned_data.get(name)
        field = Channel._meta.get_field(name)
        assert isinstance(field, models.Field)
        return field.default if value in (None, "") else value

    def clean_inactivity_timeout_seconds(self) -> int:
        return self._or_default("inactivity_timeout_seconds")

    def clean_burst_mode(self) -> str:
        return self._or_default("burst_mode")

    def clean_burst_window_ms(self) -> int:
        return self._or_default("burst_window_ms")


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "workspace", "id", "created_at"]
    list_select_related = ["workspace"]
    list_filter = ["workspace"]
    search_fields = ["=id", "name"]
    readonly_fields = ["id", "channels_link", "created_at", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        # A team stays in its workspace: its channels belong there.
        return [*self.readonly_fields, "workspace"] if obj is not None else self.readonly_fields

    @admin.display(description="channels")
    def channels_link(self, obj: Team) -> str:
        if obj.pk is None:
            return "-"
        return changelist_link(Channel, "The team\u2019s channels", team__id__exact=obj.pk)


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelAdminForm
    list_display = ["name", "type", "is_active", "workspace", "agent", "team", "id", "created_at"]
    list_select_related = ["workspace", "agent", "team"]
    list_filter = ["type", "is_active", "workspace", "team"]
    search_fields = ["=id", "name"]
    readonly_fields = ["id", "created_at", "updated_at"]

    def has_delete_permission(self, request, obj=None):
        # Deleting a channel deletes its conversations; deactivate it instead (`is_active`).
        return False

    def get_readonly_fields(self, request, obj=None):
        # A channel stays in its workspace: its conversations and contacts belong there.
        return [*self.readonly_fields, "workspace"] if obj is not None else self.readonly_fields

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        for name, model in (("agent", AIAgent), ("team", Team)):
            choice = form.base_fields.get(name)
            if choice is not None:
                queryset = model.objects.select_related("workspace")
                choice.queryset = queryset.filter(workspace=obj.workspace_id) if obj is not None else queryset
                choice.label_from_instance = lambda row: f"{row.name} ({row.workspace.name})"
        return form


class AIAgentForm(forms.ModelForm):
    """The built-in actions as checkboxes (stored as the list of those enabled, README "Actions")."""

    actions = forms.MultipleChoiceField(
        choices=[(name, name) for name in BUILTIN_ACTIONS],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="The built-in actions the agent may take (an OpenAI-compatible agent only).",
    )

    class Meta:
        model = AIAgent
        exclude: list[str] = []


@admin.register(AIAgent)
class AIAgentAdmin(admin.ModelAdmin):
    form = AIAgentForm
    list_display = ["name", "workspace", "provider", "model", "credit_cost_per_reply", "id", "updated_at"]
    list_select_related = ["workspace"]
    list_filter = ["provider", "workspace"]
    search_fields = ["=id", "name"]
    readonly_fields = ["id", "knowledge_documents", "knowledge_passages", "created_at", "updated_at"]
    # An endpoint typed without a scheme is taken as https (Django 6's default; local servers spell out http).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    fieldsets = [
        (None, {"fields": ["id", "workspace", "name", "instructions"]}),
        (
            "Model",
            {
                "fields": [
                    "provider",
                    "model",
                    "base_url",
                    "api_key_env_var",
                    "temperature",
                    "max_output_tokens",
                    "timeout_seconds",
                    "transcribe_audio",
                    "transcription_model",
                ]
            },
        ),
        ("Built-in agent", {"fields": ["greeting_text", "fallback_text", "split_threshold_chars"]}),
        ("Actions", {"fields": ["actions"], "description": "The agent's HTTP tools are under HTTP tools."}),
        (
            # The documents themselves: Knowledge > Documents (knowledge/admin.py).
            "Knowledge",
            {
                "fields": [
                    "knowledge_language",
                    "knowledge_max_passages",
                    "knowledge_max_chars",
                    "embedding_model",
                    "knowledge_documents",
                    "knowledge_passages",
                ]
            },
        ),
        (
            "History and price",
            {
                "fields": [
                    "history_max_messages",
                    "history_max_chars",
                    "credit_cost_per_reply",
                    "credit_cost_per_1k_tokens",
                ]
            },
        ),
        (None, {"fields": ["created_at", "updated_at"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "workspace"] if obj is not None else self.readonly_fields


class _PrefixChangeList(ChangeList):
    def url_for_result(self, result):
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            args=(quote(result.prefix),),
            current_app=self.model_admin.admin_site.name,
        )


@admin.register(WorkspaceApiKey)
class WorkspaceApiKeyAdmin(APIKeyModelAdmin):
    """API keys by prefix. The primary key is `prefix.hash`, so pages, links and the admin log name a key by its
    prefix: neither the secret nor its hash is ever shown (the secret is shown once, when the key is made)."""

    # (The ignores: mypy takes the untyped library's tuples for fixed-length types.)
    list_display = (
        "name",
        "prefix",
        "workspace",
        "created",
        "last_used_at",  # type: ignore[assignment]
        "expiry_date",
        "_has_expired",
        "revoked",
    )
    list_select_related = ("workspace",)
    list_filter = ("revoked", "workspace", "created")  # type: ignore[assignment]
    search_fields = ("=prefix", "name", "=workspace__slug")  # type: ignore[assignment]
    actions = None  # the selection checkboxes would carry the primary key
    show_full_result_count = False

    def has_delete_permission(self, request, obj=None):
        # Revoke instead: a revoked key stays listed, with when it was made and last used.
        return False

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["workspace", "name", "expiry_date"]
        return ["workspace", "name", "prefix", "created", "last_used_at", "expiry_date", "revoked"]

    def get_readonly_fields(self, request, obj=None):
        fields = ("created", "last_used_at", *super().get_readonly_fields(request, obj))
        return (*fields, "workspace") if obj is not None else fields

    def get_changelist(self, request, **kwargs):
        return _PrefixChangeList

    def get_object(self, request, object_id, from_field=None):
        if from_field is None and "." not in object_id:
            return self.get_queryset(request).filter(prefix=object_id).first()
        return super().get_object(request, object_id, from_field)

    def save_model(self, request, obj, form, change):
        if change:
            obj.save()
            return
        key = WorkspaceApiKey.objects.assign_key(obj)
        obj.save()
        # In monospace (I and l, 0 and O differ) and selected whole by one click; the key's change page
        # adds a copy button (templates/admin/channels_app/workspaceapikey/change_form.html).
        self.message_user(
            request,
            format_html(
                'The new API key of {} is <code class="api-key-secret">{}</code> \u2014 copy it now: it is shown '
                "only this once and only its hash is stored.",
                obj.workspace,
                key,
            ),
            messages.WARNING,
        )

    def response_add(self, request, obj, post_url_continue=None):
        return HttpResponseRedirect(reverse("admin:channels_app_workspaceapikey_change", args=(quote(obj.prefix),)))

    def log_addition(self, request, obj, message):
        return self._log(request, obj, ADDITION, message)

    def log_change(self, request, obj, message):
        return self._log(request, obj, CHANGE, message)

    def _log(self, request, obj, action_flag, message):
        return LogEntry.objects.create(
            user_id=request.user.pk,
            content_type_id=get_content_type_for_model(obj).pk,
            object_id=obj.prefix,
            object_repr=str(obj)[:200],
            action_flag=action_flag,
            change_message=message if isinstance(message, str) else json.dumps(message),
        )
