"""The money boundary: an append-only ledger of credit movements, each over a workspace and, for a charge,
the inbound message whose reply it paid for. It sits above channels_app (the workspace) and conversations
(the message), which is why the ledger is not part of the tenant's configuration."""

from django.db import models

from channels_app.models import Workspace
from config import ids


class UsageLedgerEntry(models.Model):
    """One credit movement. The workspace's balance is the sum of its entries' `delta`."""

    class Kind(models.TextChoices):
        GRANT = "GRANT", "Grant"
        CHARGE = "CHARGE", "Charge"
        ADJUSTMENT = "ADJUSTMENT", "Adjustment"

    id = models.CharField(primary_key=True, max_length=40, default=ids.ledger_id, editable=False)
    # Indexed by ledger_ws_created, which leads with it.
    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, related_name="ledger", db_index=False)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    delta = models.BigIntegerField()
    balance_after = models.BigIntegerField()
    message = models.ForeignKey(
        "conversations.Message",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_entries",
        help_text="The inbound message whose reply this charge paid for.",
    )
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        # The table keeps the name it had when the ledger lived in channels_app (billing/migrations/0001).
        db_table = "channels_app_usageledgerentry"
        verbose_name = "usage ledger entry"
        verbose_name_plural = "usage ledger"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["workspace", "-created_at"], name="ledger_ws_created")]

    def __str__(self) -> str:
        return f"{self.kind} {self.delta:+d}"
