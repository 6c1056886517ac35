"""`manage.py credits grant` (README "Management commands"): a ledger entry, the new balance on stdout."""

import pytest
from django.core.management import CommandError, call_command

from billing.models import UsageLedgerEntry


def run(capsys, *args) -> tuple[str, str]:
    call_command(*args)
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_credits_grant_adds_a_ledger_entry_and_prints_the_balance(capsys, workspace):
    # given: the fixture granted 100
    # when
    out, err = run(capsys, "credits", "grant", "--workspace", workspace.slug, "--amount", "250")

    # then
    assert out == "350\n"
    assert "Granted 250 credits" in err
    workspace.refresh_from_db()
    assert workspace.credit_balance == 350
    entry = UsageLedgerEntry.objects.filter(workspace=workspace).order_by("-created_at", "-id").first()
    assert (entry.kind, entry.delta, entry.balance_after) == ("GRANT", 250, 350)
    assert sum(UsageLedgerEntry.objects.filter(workspace=workspace).values_list("delta", flat=True)) == 350


def test_credits_grant_by_workspace_id(capsys, workspace):
    out, _ = run(capsys, "credits", "grant", "--workspace", workspace.pk, "--amount", "1")
    assert out == "101\n"


@pytest.mark.parametrize("amount", ["0", "-5", "ten", "1.5", "", "1000000000001"])
def test_credits_grant_refuses_a_bad_amount(workspace, amount):
    with pytest.raises(CommandError, match="--amount"):
        call_command("credits", "grant", "--workspace", workspace.slug, "--amount", amount)
    workspace.refresh_from_db()
    assert workspace.credit_balance == 100
    assert UsageLedgerEntry.objects.filter(workspace=workspace).count() == 1


def test_credits_grant_unknown_workspace(db):
    with pytest.raises(CommandError, match="No workspace with id or slug 'nope'"):
        call_command("credits", "grant", "--workspace", "nope", "--amount", "5")
    assert not UsageLedgerEntry.objects.exists()
