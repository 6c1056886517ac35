"""The operators' back office for the money: the usage ledger (read-only history, see config.admin_base) and
the workspace page's **Grant credits**, the only way an operator changes a balance (through a ledger entry)."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from billing.credits import CREDITS_GRANT_MAX, InsufficientCredits, credits_grant
from billing.models import UsageLedgerEntry
from channels_app import admin as channels_admin
from channels_app.admin import changelist_link
from channels_app.models import Workspace
from config.admin_base import HistoryAdmin
from conversations.admin import message_admin_link


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


class WorkspaceAdmin(channels_admin.WorkspaceAdmin):
    """channels_app's workspace page plus its money: a link to its ledger and a **Grant credits** button
    (templates/admin/billing/workspace/). Registered in place of channels_app's, whose app loads first."""

    change_form_template = "admin/billing/workspace/change_form.html"

    def get_urls(self):
        return [
            path(
                "<path:object_id>/grant-credits/",
                self.admin_site.admin_view(self.grant_credits_view),
                name=f"{self.opts.app_label}_{self.opts.model_name}_grant_credits",
            ),
            *super().get_urls(),
        ]

    def related_links(self, obj: Workspace) -> list[str]:
        return [changelist_link(UsageLedgerEntry, "Ledger", workspace__id__exact=obj.pk), *super().related_links(obj)]

    def grant_credits_view(self, request, object_id):
        """Credits change only through a ledger entry (billing.credits.credits_grant), never by editing
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
        return TemplateResponse(request, "admin/billing/workspace/grant_credits.html", context)


admin.site.unregister(Workspace)
admin.site.register(Workspace, WorkspaceAdmin)


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
        return message_admin_link(obj.message_id)
