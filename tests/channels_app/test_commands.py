"""`manage.py apikey create|list|rotate|revoke` (README.md, "Management commands"), what a caller of the
messages API sees with a rotated, expired or revoked key, and the exit status of every management command
(`credits grant` too; its output is in tests/billing/test_credits_command.py)."""

from datetime import timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command, execute_from_command_line
from django.db import connections
from django.utils import timezone

from channels_app.models import WorkspaceApiKey
from tests.conftest import error_of
from tests.factories import WorkspaceFactory, api_key_for


def run(capsys, *args) -> tuple[str, str]:
    call_command(*args)
    captured = capsys.readouterr()
    return captured.out, captured.err


@pytest.fixture
def manage_py(monkeypatch):
    """Run a command as `manage.py` does, to see the process's exit status. `run_from_argv` closes every
    connection when it ends, which would take the test's transaction with it: here it keeps them."""
    monkeypatch.setattr(connections, "close_all", lambda: None)

    def run_command(*args) -> int | str | None:
        try:
            execute_from_command_line(["manage.py", *args])
        except SystemExit as exited:
            return exited.code
        return 0

    return run_command


# --- apikey create ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["id", "slug"])
def test_apikey_create_prints_a_working_key_once(capsys, api, workspace, ref):
    # when
    out, err = run(
        capsys, "apikey", "create", "--workspace", getattr(workspace, "pk" if ref == "id" else "slug"), "--name", "ops"
    )

    # then: stdout is the key alone, so `KEY=$(manage.py apikey create ...)` works
    key = out.strip()
    prefix, _, secret = key.partition(".")
    assert out == f"{key}\n" and prefix and len(secret) == 32
    stored = WorkspaceApiKey.objects.get(prefix=prefix)
    assert (stored.workspace_id, stored.name, stored.revoked, stored.expiry_date) == (workspace.pk, "ops", False, None)
    assert secret not in stored.hashed_key and secret not in stored.pk  # only the hash is kept
    assert "shown only this once" in err and key not in err
    assert api.post(key=key).status_code == 200


def test_apikey_create_default_name(capsys, workspace):
    out, _ = run(capsys, "apikey", "create", "--workspace", workspace.slug)
    assert WorkspaceApiKey.objects.get(prefix=out.strip().split(".")[0]).name == "default"


def test_apikey_create_unknown_workspace(db):
    with pytest.raises(CommandError, match="No workspace with id or slug 'nope'"):
        call_command("apikey", "create", "--workspace", "nope")
    assert not WorkspaceApiKey.objects.exists()


# --- apikey list ------------------------------------------------------------------------------------------


def test_apikey_list_shows_the_workspace_keys_and_never_their_secret(capsys, workspace):
    # given
    with time_machine.travel(timezone.now() - timedelta(days=2), tick=False):
        old, old_key = api_key_for(workspace, name="old-one")
    current, current_key = api_key_for(workspace, name="current")
    WorkspaceApiKey.objects.filter(pk=old.pk).update(revoked=True)
    WorkspaceApiKey.objects.filter(pk=current.pk).update(last_used_at=timezone.now())
    foreign, _ = api_key_for(WorkspaceFactory(), name="foreign")

    # when
    out, _ = run(capsys, "apikey", "list", "--workspace", workspace.slug)

    # then
    header, *rows = out.splitlines()
    assert header.split() == ["PREFIX", "NAME", "CREATED", "LAST", "USED", "EXPIRES", "REVOKED"]
    assert [row.split()[:2] for row in rows] == [[current.prefix, "current"], [old.prefix, "old-one"]]
    assert rows[0].endswith("no") and rows[1].endswith("yes")
    assert current.created.strftime("%Y-%m-%d %H:%M") in rows[0] and "UTC" in rows[0]
    assert foreign.prefix not in out
    for secret in (old_key.split(".")[1], current_key.split(".")[1], old.hashed_key, current.hashed_key):
        assert secret not in out


def test_apikey_list_marks_expired_keys(capsys, workspace):
    api_key, _ = api_key_for(workspace)
    WorkspaceApiKey.objects.filter(pk=api_key.pk).update(expiry_date=timezone.now() - timedelta(minutes=1))
    out, _ = run(capsys, "apikey", "list", "--workspace", workspace.pk)
    assert "(expired)" in out.splitlines()[1]


def test_apikey_list_of_a_workspace_without_keys(capsys, workspace):
    out, _ = run(capsys, "apikey", "list", "--workspace", workspace.slug)
    assert "has no API keys" in out and "apikey create" in out


def test_apikey_list_unknown_workspace(db):
    with pytest.raises(CommandError, match="No workspace"):
        call_command("apikey", "list", "--workspace", "nope")


def test_apikey_list_shows_last_use_kept_without_a_write_per_request(capsys, api, api_key):
    prefix = api_key.split(".")[0]
    start = timezone.now().replace(microsecond=0)
    with time_machine.travel(start, tick=False):
        api.post(key=api_key)
    with time_machine.travel(start + timedelta(seconds=59), tick=False):
        api.post(key=api_key)  # within the minute: no write
    assert WorkspaceApiKey.objects.get(prefix=prefix).last_used_at == start
    with time_machine.travel(start + timedelta(seconds=61), tick=False):
        api.post(key=api_key)
    assert WorkspaceApiKey.objects.get(prefix=prefix).last_used_at == start + timedelta(seconds=61)

    out, _ = run(capsys, "apikey", "list", "--workspace", api.channel.workspace.slug)
    assert (start + timedelta(seconds=61)).strftime("%Y-%m-%d %H:%M:%S UTC") in out


# --- apikey rotate ----------------------------------------------------------------------------------------


def test_apikey_rotate_without_grace_ends_the_old_key_at_once(capsys, api, api_key):
    # given
    prefix = api_key.split(".")[0]

    # when
    out, err = run(capsys, "apikey", "rotate", prefix, "--grace", "0")

    # then
    new_key = out.strip()
    assert out == f"{new_key}\n" and new_key != api_key
    assert "fails with 401 from now on" in err
    error = error_of(api.post(key=api_key), status=401)
    assert error["code"] == "invalid_api_key" and error["details"]["reason"] == "expired"
    assert api.post(key=new_key).status_code == 200
    rotated = WorkspaceApiKey.objects.get(prefix=prefix)
    assert not rotated.revoked and rotated.has_expired


def test_apikey_rotate_default_grace_keeps_the_old_key_for_24_hours(capsys, api, api_key):
    # given
    prefix = api_key.split(".")[0]
    start = timezone.now()

    # when
    with time_machine.travel(start, tick=False):
        out, err = run(capsys, "apikey", "rotate", prefix)
    new_key = out.strip()

    # then: both keys work through the grace period ...
    assert "keeps working until" in err
    with time_machine.travel(start + timedelta(hours=23, minutes=59), tick=False):
        assert api.post(key=api_key).status_code == 200
        assert api.post(key=new_key).status_code == 200
    # ... then only the new one does
    with time_machine.travel(start + timedelta(hours=24, seconds=1), tick=False):
        error = error_of(api.post(key=api_key), status=401)
        assert error["code"] == "invalid_api_key" and error["details"]["reason"] == "expired"
        assert "expired" in error["message"]
        assert api.post(key=new_key).status_code == 200
    assert WorkspaceApiKey.objects.get(prefix=prefix).expiry_date == start + timedelta(hours=24)


@pytest.mark.parametrize(
    ("grace", "expected"),
    [
        ("0", timedelta(0)),
        ("90", timedelta(seconds=90)),
        ("45s", timedelta(seconds=45)),
        ("30m", timedelta(minutes=30)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        (" 2H ", timedelta(hours=2)),
    ],
)
def test_apikey_rotate_grace_durations(capsys, workspace, grace, expected):
    api_key, _ = api_key_for(workspace)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        run(capsys, "apikey", "rotate", api_key.prefix, "--grace", grace)
    assert WorkspaceApiKey.objects.get(pk=api_key.pk).expiry_date == start + expected


def test_apikey_rotate_never_extends_an_earlier_expiry(capsys, workspace):
    api_key, _ = api_key_for(workspace)
    soon = timezone.now() + timedelta(hours=1)
    WorkspaceApiKey.objects.filter(pk=api_key.pk).update(expiry_date=soon)
    _, err = run(capsys, "apikey", "rotate", api_key.prefix, "--grace", "7d")
    assert WorkspaceApiKey.objects.get(pk=api_key.pk).expiry_date == soon
    assert soon.strftime("%Y-%m-%d %H:%M:%S") in err  # it tells the real end of the old key


@pytest.mark.parametrize("grace", ["-1", "1w", "h", "1.5h", "24 h", "", "366d"])
def test_apikey_rotate_refuses_a_bad_duration(workspace, grace):
    api_key, _ = api_key_for(workspace)
    with pytest.raises(CommandError, match="--grace"):
        call_command("apikey", "rotate", api_key.prefix, "--grace", grace)
    assert WorkspaceApiKey.objects.count() == 1
    assert WorkspaceApiKey.objects.get().expiry_date is None


def test_apikey_rotate_unknown_prefix(db):
    with pytest.raises(CommandError, match="No API key with prefix 'nope'"):
        call_command("apikey", "rotate", "nope")


def test_apikey_rotate_refuses_a_revoked_key(workspace):
    api_key, _ = api_key_for(workspace)
    call_command("apikey", "revoke", api_key.prefix)
    with pytest.raises(CommandError, match="revoked"):
        call_command("apikey", "rotate", api_key.prefix)
    assert WorkspaceApiKey.objects.count() == 1


# --- apikey revoke ----------------------------------------------------------------------------------------


def test_apikey_revoke_is_immediate(capsys, api, api_key):
    # given
    prefix = api_key.split(".")[0]
    assert api.post(key=api_key).status_code == 200

    # when
    out, _ = run(capsys, "apikey", "revoke", prefix)

    # then
    assert f"Revoked API key {prefix}" in out
    error = error_of(api.post(key=api_key), status=401)
    assert error["code"] == "invalid_api_key" and error["details"]["reason"] == "revoked"
    assert "revoked" in error["message"]


def test_apikey_revoke_unknown_prefix(db):
    with pytest.raises(CommandError, match="No API key with prefix 'nope'"):
        call_command("apikey", "revoke", "nope")


# --- what the caller learns -------------------------------------------------------------------------------


def test_only_the_key_holder_learns_why_a_key_stopped_working(api, api_key):
    """A revoked or expired key says so only to a caller who sends its real secret: a guess at a prefix
    learns nothing (it gets the same answer as an unknown key)."""
    prefix = api_key.split(".")[0]
    call_command("apikey", "revoke", prefix)
    for guess in (f"{prefix}.{'x' * 32}", f"zzzzzzzz.{'x' * 32}"):
        error = error_of(api.post(key=guess), status=401)
        assert error["code"] == "invalid_api_key" and "reason" not in error["details"]
    assert error_of(api.post(key=api_key), status=401)["details"]["reason"] == "revoked"


# --- exit codes, as the shell sees them -------------------------------------------------------------------


def test_errors_exit_non_zero_with_a_message(capsys, manage_py, workspace):
    assert manage_py("apikey", "revoke", "nope") == 1
    assert "No API key with prefix 'nope'" in capsys.readouterr().err
    assert manage_py("apikey", "create", "--workspace", "nope") == 1
    assert "No workspace" in capsys.readouterr().err
    assert manage_py("credits", "grant", "--workspace", "nope", "--amount", "5") == 1
    assert manage_py("credits", "grant", "--workspace", workspace.slug, "--amount", "0") == 2  # usage error
    assert "--amount" in capsys.readouterr().err
    assert manage_py("apikey", "rotate", "abc", "--grace", "soon") == 2
    assert "is not a duration" in capsys.readouterr().err
    assert manage_py("apikey") == 2  # no subcommand
    assert manage_py("apikey", "create") == 2  # --workspace is required


def test_success_exits_zero(capsys, manage_py, workspace):
    assert manage_py("credits", "grant", "--workspace", workspace.slug, "--amount", "5") == 0
    assert capsys.readouterr().out == "105\n"


def test_rotating_a_revoked_key_is_the_callers_mistake_not_an_internal_error(workspace):
    from channels_app.services import ApiKeyRevoked, apikey_revoke, apikey_rotate

    api_key, _ = api_key_for(workspace)
    apikey_revoke(prefix=api_key.prefix)
    with pytest.raises(ApiKeyRevoked) as raised:
        apikey_rotate(prefix=api_key.prefix, grace=timedelta(0))
    assert (raised.value.code, raised.value.status_code) == ("api_key_revoked", 409)
