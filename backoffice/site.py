"""The admin site of the back office: Django's, with a dashboard on its index and the exports.

Who sees what. Staff users are not tied to a workspace (there is no such link in the data model yet): a
user who may view messages in the admin already sees every workspace's messages, so the dashboard shows
every workspace too, with a workspace filter; superusers likewise. A user without that permission gets
the plain index. When staff users get a workspace (or a team), `dashboard_workspace` is where their
choice narrows to it.
"""

from datetime import timedelta

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseBadRequest, StreamingHttpResponse
from django.urls import path, reverse
from django.utils import timezone

from backoffice import charts, exports
from backoffice.dashboard import dashboard_get, dashboard_range
from billing.models import UsageLedgerEntry
from channels_app.models import Workspace
from conversations.models import Conversation, Message

_FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


def _streamed(lines, *, format: str, filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(lines, content_type=_FORMATS[format])
    response["Content-Disposition"] = f'attachment; filename="{filename}.{format}"'
    response["Cache-Control"] = "no-store"  # operators' data: not for shared caches
    return response


class BackofficeSite(admin.AdminSite):
    site_url = "/api/docs/"  # "View site": the API's documentation; the service has no other site
    index_template = "backoffice/index.html"

    def get_urls(self):
        return [
            path(
                "exports/ledger.<str:format>",
                self.admin_view(self.ledger_export_view),
                name="backoffice_ledger_export",
            ),
            path(
                "exports/conversations/<path:conversation_id>/transcript.<str:format>",
                self.admin_view(self.transcript_export_view),
                name="backoffice_transcript_export",
            ),
            *super().get_urls(),
        ]

    def _can_view(self, request, model) -> bool:
        model_admin = self._registry.get(model)
        return model_admin is not None and model_admin.has_view_permission(request)

    def dashboard_workspace(self, request) -> str:
        """The workspace the page is narrowed to ("" = all). A stale or unknown id shows no rows."""
        return request.GET.get("workspace", "").strip()[:40]

    def index(self, request, extra_context=None):
        context = dict(extra_context or {})
        if self._can_view(request, Message):
            today = timezone.now().date()
            date_range = dashboard_range(params=request.GET, today=today)
            workspace_id = self.dashboard_workspace(request)
            dashboard = dashboard_get(date_range=date_range, workspace_id=workspace_id)
            query = f"from={date_range.start}&to={date_range.end}" + (
                f"&workspace={workspace_id}" if workspace_id else ""
            )
            context["dashboard"] = dashboard
            context["dashboard_charts"] = {
                "messages": charts.messages_chart(dashboard),
                "credits": charts.credits_chart(dashboard),
                "latency": charts.latency_chart(dashboard),
                "failures": charts.failures_chart(dashboard),
                "channels": charts.channels_chart(dashboard),
            }
            context["dashboard_query"] = query
            context["dashboard_quick_ranges"] = [
                {"label": f"{days} days", "start": today - timedelta(days=days - 1), "end": today}
                for days in (7, 30, 90)
            ]
            if self._can_view(request, UsageLedgerEntry):
                context["ledger_export"] = {
                    format: reverse(f"{self.name}:backoffice_ledger_export", kwargs={"format": format}) + f"?{query}"
                    for format in _FORMATS
                }
        return super().index(request, context)

    def ledger_export_view(self, request, format: str):
        if format not in _FORMATS:
            raise Http404("Export as .csv or .json.")
        if not self._can_view(request, UsageLedgerEntry):
            raise PermissionDenied
        date_range = dashboard_range(params=request.GET, today=timezone.now().date())
        if date_range.error:
            return HttpResponseBadRequest(date_range.error, content_type="text/plain; charset=utf-8")
        workspace_id = request.GET.get("workspace", "").strip()
        if workspace_id and not Workspace.objects.filter(pk=workspace_id).exists():
            raise Http404("No such workspace.")
        start, end = date_range.start, date_range.end
        if format == "csv":
            lines = exports.csv_lines(
                exports.LEDGER_COLUMNS, exports.ledger_rows(start=start, end=end, workspace_id=workspace_id)
            )
        else:
            lines = exports.ledger_json(start=start, end=end, workspace_id=workspace_id)
        name = f"ledger-{workspace_id + '-' if workspace_id else ''}{start}-{end}"
        return _streamed(lines, format=format, filename=name)

    def transcript_export_view(self, request, conversation_id: str, format: str):
        if format not in _FORMATS:
            raise Http404("Export as .csv or .json.")
        if not (self._can_view(request, Conversation) and self._can_view(request, Message)):
            raise PermissionDenied
        conversation = Conversation.objects.select_related("contact").filter(pk=unquote(conversation_id)).first()
        if conversation is None:
            raise Http404("No such conversation.")
        if format == "csv":
            lines = exports.csv_lines(exports.TRANSCRIPT_COLUMNS, exports.transcript_rows(conversation=conversation))
        else:
            lines = exports.transcript_json(conversation=conversation)
        return _streamed(lines, format=format, filename=f"transcript-{conversation.pk}")
