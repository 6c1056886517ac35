"""`manage.py workspace create --name N --slug S [--credits N]` (README "Management commands"): a new
workspace, its id on stdout, its starting credits a ledger entry; exit 1 when the slug is taken (also when
two creations race for it), 2 for a malformed argument."""

import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from billing.models import UsageLedgerEntry
from channels_app.models import Workspace
from channels_app.services import WorkspaceSlugTaken, workspace_create


def test_create_prints_the_id_of_a_new_workspace_with_its_credits_as_a_ledger_entry(manage_py, api, channel):
    # when
    code, out, err = manage_py("workspace", "create", "--name", " Acme Support ", "--slug", "acme", "--credits", "500")

    # then
    assert code == 0
    workspace = Workspace.objects.get(slug="acme")
    assert out == f"{workspace.pk}\n"
    assert (workspace.name, workspace.credit_balance, workspace.credit_reserved) == ("Acme Support", 500, 0)
    [entry] = UsageLedgerEntry.objects.filter(workspace=workspace)
    assert (entry.kind, entry.delta, entry.balance_after) == ("GRANT", 500, 500)
    assert "apikey create --workspace acme" in err

    # and the next step of a scripted set-up works on it
    code, key, _ = manage_py("apikey", "create", "--workspace", "acme")
    assert code == 0 and key.strip()


def test_create_without_credits_makes_an_empty_workspace_and_no_ledger_entry(manage_py, db):
    code, out, _ = manage_py("workspace", "create", "--name", "Beta", "--slug", "beta")

    assert code == 0
    workspace = Workspace.objects.get(pk=out.strip())
    assert workspace.credit_balance == 0
    assert not UsageLedgerEntry.objects.filter(workspace=workspace).exists()


def test_a_taken_slug_exits_1_and_changes_nothing(manage_py, workspace):
    # given: the fixture's workspace, with 100 credits
    before = (Workspace.objects.count(), UsageLedgerEntry.objects.count())

    # when
    code, out, err = manage_py("workspace", "create", "--name", "Other", "--slug", workspace.slug, "--credits", "5")

    # then
    assert (code, out) == (1, "")
    assert f"The slug {workspace.slug!r} is taken" in err
    assert (Workspace.objects.count(), UsageLedgerEntry.objects.count()) == before
    workspace.refresh_from_db()
    assert (workspace.name, workspace.credit_balance) != ("Other", 105)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        pytest.param(["--name", "A", "--slug", "with space"], "is not a slug", id="slug-space"),
        pytest.param(["--name", "A", "--slug", "ws_01abc"], "a workspace id's prefix", id="slug-like-an-id"),
        pytest.param(["--name", "A", "--slug", "x" * 101], "is not a slug", id="slug-too-long"),
        pytest.param(["--name", "   ", "--slug", "a"], "a name of 1 to 200", id="blank-name"),
        pytest.param(["--name", "A", "--slug", "a", "--credits", "-1"], "--credits", id="negative-credits"),
        pytest.param(["--name", "A", "--slug", "a", "--credits", "ten"], "--credits", id="credits-not-a-number"),
        pytest.param(["--name", "A", "--slug", "a", "--credits", "1000000000001"], "--credits", id="credits-over"),
        pytest.param(["--slug", "a"], "--name", id="no-name"),
    ],
)
def test_a_malformed_argument_exits_2_and_creates_nothing(manage_py, db, args, says):
    code, out, err = manage_py("workspace", "create", *args)

    assert (code, out) == (2, "")
    assert says in err
    assert not Workspace.objects.exists()


def test_call_command_raises_the_commands_error_for_a_taken_slug(workspace):
    with pytest.raises(CommandError, match="is taken by another workspace"):
        call_command("workspace", "create", "--name", "Other", "--slug", workspace.slug)


@pytest.mark.django_db(transaction=True)
def test_two_creations_of_one_slug_at_once_make_one_workspace():
    # given: two threads that insert the same slug at the same moment (the second waits on the first's
    # uncommitted row in the unique index, then finds it taken)
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def create(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            outcomes.append(workspace_create(name=f"Race {index}", slug="race").pk)
        except WorkspaceSlugTaken as error:
            outcomes.append(error)
        finally:
            connection.close()

    # when
    threads = [threading.Thread(target=create, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    # then: one workspace; the other creation is the caller's mistake (exit 1), not an internal error
    [workspace] = Workspace.objects.filter(slug="race")
    assert [outcome for outcome in outcomes if not isinstance(outcome, WorkspaceSlugTaken)] == [workspace.pk]
    [taken] = [outcome for outcome in outcomes if isinstance(outcome, WorkspaceSlugTaken)]
    assert (taken.code, taken.details) == ("workspace_slug_taken", {"slug": "race"})
