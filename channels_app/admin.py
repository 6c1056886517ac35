"""The operators' back office for the workspace's configuration (editable) and its ledger and idempotency
records (read-only history, like the conversations; see config.admin_base)."""

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.admin.options import get_content_type_for_model
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from channels_app.credits import credits_grant
from channels_app.models import (
    AIAgent,
    Channel,
    IdempotencyRecord,
    KnowledgeEntry,
    UsageLedgerEntry,
    Workspace,
    WorkspaceApiKey,
)
from channels_app.services import CREDITS_GRANT_MAX
from config.admin_base import HistoryAdmin
from config.errors import InsufficientCredits

admin.site.site_header = "Channels API back office"
admin.site.site_title = "Channels API"
admin.site.index_title = "Operations"

# The library's own concrete APIKey model is unused (keys belong to a workspace): its admin would only
# confuse operators.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


def _changelist_link(model: type[models.Model], label: str, **filters: str) -> str:
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    query = "&".join(f"{key}={quote(value)}" for key, value in filters.items())
    return format_html('<a href="{}?{}">{}</a>', url, query, label)


# --- configuration ----------------------------------------------------------------------------------------


class CreditsGrantForm(forms.Form):
    amount = forms.IntegerField(
        min_value=-CREDITS_GRANT_MAX,
        max_value=CREDITS_GRANT_MAX,
        help_text="Credits to add. A negative number removes credits (recorded as an adjustment); the balance "
        "cannot drop below what messages in flight have reserved.",
    )
    note = forms.CharField(max_length=150, required=False, help_text="Why, for the ledger (optional).")

    def clean_amount(self) -> int:
        amount = self.cleaned_data["amount"]
        if amount == 0:
            raise forms.ValidationError("Enter a number of credits other than 0.")
        return amount


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

    def get_urls(self):
        return [
            path(
                "<path:object_id>/grant-credits/",
                self.admin_site.admin_view(self.grant_credits_view),
                name=f"{self.opts.app_label}_{self.opts.model_name}_grant_credits",
            ),
            *super().get_urls(),
        ]

    @admin.display(description="related")
    def related(self, obj: Workspace) -> str:
        if obj.pk is None:
            return "-"
        links = [
            _changelist_link(UsageLedgerEntry, "Ledger", workspace__id__exact=obj.pk),
            _changelist_link(WorkspaceApiKey, "API keys", workspace__id__exact=obj.pk),
            _changelist_link(Channel, "Channels", workspace__id__exact=obj.pk),
            _changelist_link(AIAgent, "AI agents", workspace__id__exact=obj.pk),
        ]
        return format_html_join(" \u00b7 ", "{}", ((link,) for link in links))

    def grant_credits_view(self, request, object_id):
        """Credits change only through a ledger entry (channels_app.credits.credits_grant), never by editing
        the balance."""
        workspace = self.get_object(request, unquote(object_id))
        if workspace is None:
            raise Http404("No such workspace.")
        if not self.has_change_permission(request, workspace):
            raise PermissionDenied
        form = CreditsGrantForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            amount = form.cleaned_data["amount"]
            note = form.cleaned_data["note"] or "granted in the admin"
            try:
                entry = credits_grant(
                    workspace=workspace,
                    amount=amount,
                    note=f"{note} (by {request.user.get_username()})",
                    kind=UsageLedgerEntry.Kind.GRANT if amount > 0 else UsageLedgerEntry.Kind.ADJUSTMENT,
                )
            except InsufficientCredits as error:
                form.add_error("amount", error.message)
            else:
                self.log_change(request, workspace, f"Credits {amount:+d} (ledger entry {entry.pk}).")
                self.message_user(
                    request,
                    f"{amount:+d} credits for {workspace}: the balance is now {entry.balance_after}.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:channels_app_workspace_change", args=[quote(workspace.pk)]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Grant credits to {workspace}",
            "opts": self.opts,
            "original": workspace,
            "form": form,
        }
        return TemplateResponse(request, "admin/channels_app/workspace/grant_credits.html", context)


class ChannelAdminForm(forms.ModelForm):
    class Meta:
        model = Channel
        fields = ["workspace", "name", "type", "is_active", "agent"]

    def clean(self):
        cleaned = super().clean()
        workspace = cleaned.get("workspace") or (self.instance.workspace if self.instance.workspace_id else None)
        agent = cleaned.get("agent")
        if agent is not None and workspace is not None and agent.workspace_id != workspace.pk:
            # Another workspace's agent would answer with that workspace's instructions and knowledge.
            self.add_error("agent", f"Choose an AI agent of the workspace \u201c{workspace}\u201d.")
        return cleaned


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelAdminForm
    list_display = ["name", "type", "is_active", "workspace", "agent", "id", "created_at"]
    list_select_related = ["workspace", "agent"]
    list_filter = ["type", "is_active", "workspace"]
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
        agent_field = form.base_fields.get("agent")
        if agent_field is not None:
            queryset = AIAgent.objects.select_related("workspace")
            agent_field.queryset = queryset.filter(workspace=obj.workspace_id) if obj is not None else queryset
            agent_field.label_from_instance = lambda agent: f"{agent.name} ({agent.workspace.name})"
        return form


class KnowledgeEntryInline(admin.StackedInline):
    model = KnowledgeEntry
    extra = 0
    fields = ["question", "answer"]
    formfield_overrides = {models.TextField: {"widget": forms.Textarea(attrs={"rows": 3, "cols": 80})}}


@admin.register(AIAgent)
class AIAgentAdmin(admin.ModelAdmin):
    inlines = [KnowledgeEntryInline]
    list_display = ["name", "workspace", "provider", "model", "credit_cost_per_reply", "id", "updated_at"]
    list_select_related = ["workspace"]
    list_filter = ["provider", "workspace"]
    search_fields = ["=id", "name"]
    readonly_fields = ["id", "created_at", "updated_at"]
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
                ]
            },
        ),
        ("Built-in agent", {"fields": ["greeting_text", "fallback_text", "split_threshold_chars"]}),
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


# --- history ------------------------------------------------------------------------------------------------


def _message_link(message_id: str | None) -> str:
    """A link to the message's read-only page, or "-"."""
    if not message_id:
        return "-"
    url = reverse("admin:conversations_message_change", args=[quote(message_id)])
    return format_html('<a href="{}">{}</a>', url, message_id)


@admin.register(UsageLedgerEntry)
class UsageLedgerEntryAdmin(HistoryAdmin):
    list_display = [
        "created_at",
        "workspace",
        "kind",
        "delta",
        "balance_after",
        "message_link",
        "note",
    ]  # the tokens are on the entry's page: with them the list is wider than 1400 px
    list_select_related = ["workspace"]
    list_filter = ["kind", "workspace", "created_at"]
    search_fields = ["=id", "=message__id", "note"]
    fields = readonly_fields = (
        "id",
        "workspace",
        "kind",
        "delta",
        "balance_after",
        "message_link",
        "input_tokens",
        "output_tokens",
        "note",
        "created_at",
    )

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("workspace")

    @admin.display(description="message")
    def message_link(self, obj: UsageLedgerEntry) -> str:
        return _message_link(obj.message_id)


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
        return _message_link(obj.message_id)

    @admin.display(description="response body")
    def response(self, obj: IdempotencyRecord) -> str:
        if obj.response_body is None:
            return "-"
        return format_html(
            '<pre style="white-space: pre-wrap">{}</pre>', bytes(obj.response_body).decode("utf-8", errors="replace")
        )
