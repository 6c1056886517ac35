"""Webhooks in the back office: each channel's webhook URL (editable; its signing secret never shown), and
the events, deliveries and attempts (read-only history, see config.admin_base) with a "redeliver" action."""

import json

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from channels_app.models import AgentTool
from config.admin_base import HistoryAdmin, ReadOnlyAdminMixin
from webhooks.address import webhook_url_check
from webhooks.errors import WebhookUrlNotAllowed
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from webhooks.services import deliveries_redeliver, webhook_set, webhook_url_change
from webhooks.tools import agent_tool_problems, agent_tool_put


def _link(obj, label: str | None = None) -> str:
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=(obj.pk,))
    return format_html('<a href="{}">{}</a>', url, label or str(obj))


class WebhookEndpointForm(forms.ModelForm):
    class Meta:
        model = WebhookEndpoint
        fields = ["channel", "url"]

    def clean_url(self) -> str:
        url = self.cleaned_data["url"].strip()
        try:
            webhook_url_check(url=url)
        except WebhookUrlNotAllowed as error:
            raise forms.ValidationError(error.message) from error
        return url


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    """The signing secret is printed by `manage.py webhook set` and `webhook secret`, once, and never shown
    here: a page or a log of the admin is no place for a key that signs events."""

    form = WebhookEndpointForm
    list_display = ["channel", "url", "secret_set_at", "updated_at"]
    list_select_related = ["channel"]
    search_fields = ["=channel__id", "url"]
    autocomplete_fields = ["channel"]
    readonly_fields = ["secret_set_at", "created_at", "updated_at"]

    def get_fields(self, request, obj=None):
        return ["channel", "url"] if obj is None else ["channel", "url", *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "channel"] if obj is not None else []

    def save_model(self, request, obj, form, change):
        # Through the services: a new webhook gets its secret there, an edit keeps it.
        if change:
            webhook_url_change(channel_id=obj.channel_id, url=obj.url)
        else:
            webhook_set(channel_id=obj.channel_id, url=obj.url)
            self.message_user(
                request,
                f"The webhook has a signing secret, which the admin never shows: print a new one with "
                f"`manage.py webhook secret {obj.channel_id}` and give it to the receiver.",
                messages.WARNING,
            )
        obj.refresh_from_db()


class WebhookAttemptInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    fields = readonly_fields = (
        "number",
        "started_at",
        "duration_ms",
        "status_code",
        "outcome",
        "url",
        "response_excerpt",
    )


@admin.register(WebhookEvent)
class WebhookEventAdmin(HistoryAdmin):
    list_display = ["id", "type", "channel", "created_at"]
    list_select_related = ["channel"]
    list_filter = ["type", "created_at"]
    search_fields = ["=id", "=contact_id", "=channel__id"]
    date_hierarchy = None
    fields = readonly_fields = ("id", "type", "channel", "contact_id", "created_at", "deliveries", "body")

    @admin.display(description="deliveries")
    def deliveries(self, obj: WebhookEvent) -> str:
        return format_html_join(
            ", ", "{}", ((_link(delivery, f"{delivery.pk} ({delivery.status})"),) for delivery in obj.deliveries.all())
        )

    @admin.display(description="body (as sent)")
    def body(self, obj: WebhookEvent) -> str:
        try:
            pretty = json.dumps(json.loads(obj.payload), indent=2, ensure_ascii=False)
        except ValueError:
            pretty = obj.payload
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', pretty)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(HistoryAdmin):
    inlines = [WebhookAttemptInline]
    # What an operator reads first, fitting 1400 px with the navigation sidebar open: when, which event type,
    # how it went (status and attempts in one column, the receiver's last answer in another), when the next
    # attempt is due. The ids, the event and the delivery time are on the delivery's page.
    list_display = ["created_at", "event_type", "status_display", "last_answer", "next_attempt_at"]
    list_display_links = ["created_at"]
    list_select_related = ["event"]
    list_filter = ["status", "event__type", "last_outcome"]
    search_fields = ["=id", "=event__id", "=event__channel__id"]
    fields = readonly_fields = (
        "id",
        "event_link",
        "event_type",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_outcome",
        "delivered_at",
        "created_at",
    )
    actions = ["redeliver"]

    @admin.display(description="event")
    def event_link(self, obj: WebhookDelivery) -> str:
        return _link(obj.event, obj.event_id)

    @admin.display(description="type")
    def event_type(self, obj: WebhookDelivery) -> str:
        return obj.event.type

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: WebhookDelivery) -> str:
        return f"{obj.get_status_display()}, {obj.attempts} attempt{'' if obj.attempts == 1 else 's'}"

    @admin.display(description="last answer")
    def last_answer(self, obj: WebhookDelivery) -> str:
        """The receiver's last status code and the attempt's outcome, e.g. `503 http_status`."""
        return " ".join(str(part) for part in (obj.last_status_code, obj.last_outcome) if part) or "-"

    def has_redeliver_permission(self, request) -> bool:
        # Whoever may configure webhooks may send their events again.
        return request.user.has_perm("webhooks.change_webhookendpoint")

    @admin.action(description="Redeliver the selected deliveries' events", permissions=["redeliver"])
    def redeliver(self, request, queryset):
        count = deliveries_redeliver(delivery_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(
            request,
            f"{count} deliveries scheduled now, each with its event's webhook-id.",
            messages.SUCCESS,
        )


class AgentToolForm(forms.ModelForm):
    """An agent's HTTP tool (README "HTTP tools"): checked as `manage.py agent tool add` checks it."""

    class Meta:
        model = AgentTool
        fields = [
            "agent",
            "name",
            "description",
            "method",
            "url",
            "parameters",
            "header_name",
            "header_env_var",
            "timeout_seconds",
        ]

    def clean(self):
        data = super().clean()
        problems = agent_tool_problems(
            name=data.get("name") or "",
            method=data.get("method") or "",
            url=(data.get("url") or "").strip(),
            parameters=data.get("parameters"),
            header_name=data.get("header_name") or "",
            header_env_var=data.get("header_env_var") or "",
            timeout_seconds=data.get("timeout_seconds") or 0,
        )
        fields = {"header": "header_env_var", "timeout": "timeout_seconds"}
        for field, problem in problems.items():
            self.add_error(fields.get(field, field), problem)
        return data


@admin.register(AgentTool)
class AgentToolAdmin(admin.ModelAdmin):
    """Each save gives the tool a new signing secret, shown once in the page's message (stored encrypted)."""

    form = AgentToolForm
    list_display = ["name", "agent", "method", "url", "timeout_seconds", "updated_at"]
    list_select_related = ["agent"]
    search_fields = ["=agent__id", "name", "url"]
    readonly_fields = ["created_at", "updated_at"]

    def save_model(self, request, obj, form, change):
        secret = agent_tool_put(
            agent_id=obj.agent_id,
            name=obj.name,
            description=obj.description,
            method=obj.method,
            url=obj.url.strip(),
            parameters=obj.parameters,
            header_name=obj.header_name,
            header_env_var=obj.header_env_var,
            timeout_seconds=obj.timeout_seconds,
        )
        if change and form.initial.get("name") not in (None, obj.name):
            AgentTool.objects.filter(agent_id=obj.agent_id, name=form.initial["name"]).delete()
        saved = AgentTool.objects.get(agent_id=obj.agent_id, name=obj.name)
        obj.pk, obj.secret_encrypted = saved.pk, saved.secret_encrypted
        self.message_user(
            request,
            f"The tool's signing secret, shown only this once (verify each call's webhook-signature with it): {secret}",
            messages.WARNING,
        )
