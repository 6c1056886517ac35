"""`manage.py webhook set|secret|deliver`, and how the secret is kept."""

import base64
import subprocess

import pytest
from django.core.management import call_command
from django.utils import timezone

from tests.live_gunicorn import BASE_DIR, BIN, database_url_for_servers, server_env
from tests.webhooks.conftest import Reply, verified
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.secret import secret_decrypt
from webhooks.services import event_emit


def test_set_prints_a_new_secret_once_and_stores_it_encrypted(channel, receiver, manage_py):
    # when
    code, out, err = manage_py("webhook", "set", channel.pk, receiver.url)

    # then: stdout is the secret alone, in the Standard Webhooks format
    assert code == 0
    secret = out.strip()
    assert out == secret + "\n" and secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert "shown only this once" in err and secret not in err
    endpoint = WebhookEndpoint.objects.get(channel=channel)
    assert endpoint.url == receiver.url
    stored = bytes(endpoint.secret_encrypted)
    assert secret.encode() not in stored and secret.removeprefix("whsec_").encode() not in stored
    assert secret_decrypt(encrypted=stored) == secret


def test_set_again_gives_a_new_secret(channel, receiver, manage_py):
    _, first, _ = manage_py("webhook", "set", channel.pk, receiver.url)
    _, second, _ = manage_py("webhook", "set", channel.pk, receiver.url + "/v2")

    assert first != second
    assert WebhookEndpoint.objects.get(channel=channel).url == receiver.url + "/v2"


@pytest.mark.parametrize(
    "url, says",
    [
        ("ftp://example.com/hook", "must start with http:// or https://"),
        ("https://user:pw@example.com/hook", "must not contain a user name or password"),
        ("http://127.0.0.1:9/hook", "private, local or reserved"),  # not allowed for webhooks in this test
        ("http://169.254.169.254/latest", "private, local or reserved"),
        ("http://[::1]/hook", "private, local or reserved"),
        ("https://no-such-host.invalid/hook", "could not be resolved"),
        ("not a url", "not a valid URL"),
    ],
)
def test_set_refuses_a_url_that_breaks_the_address_rules_with_exit_1(channel, manage_py, settings, url, says):
    # given: media downloads may reach loopback; webhooks may not
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = []
    settings.MEDIA_ALLOW_PRIVATE_HOSTS = ["127.0.0.1", "::1"]

    code, out, err = manage_py("webhook", "set", channel.pk, url)

    assert code == 1
    assert out == ""
    assert says in err
    assert not WebhookEndpoint.objects.exists()


def test_set_on_an_unknown_channel_exits_1(db, manage_py, receiver):
    code, out, err = manage_py("webhook", "set", "ch_nope", receiver.url)

    assert (code, out) == (1, "")
    assert "No channel has the id 'ch_nope'" in err


def test_secret_prints_a_new_one_and_the_old_stops_signing_at_once(hooked, receiver, manage_py):
    # given
    channel, old = hooked

    # when
    code, out, err = manage_py("webhook", "secret", channel.pk)

    # then
    assert code == 0
    new = out.strip()
    assert new.startswith("whsec_") and new != old and "old secret signs nothing" in err
    event = event_emit(channel_id=channel.pk, type="conversation.closed", data={"conversation": {}})
    from webhooks.delivery import delivery_attempt

    delivery_attempt(delivery_id=event.deliveries.get().pk)
    verified(receiver.requests[0], new)


def test_secret_without_a_webhook_exits_1(channel, manage_py):
    code, out, err = manage_py("webhook", "secret", channel.pk)

    assert (code, out) == (1, "")
    assert "has no webhook" in err and f"manage.py webhook set {channel.pk} URL" in err


def test_deliver_sends_every_due_delivery_now(hooked, receiver, capsys):
    # given: two events whose hand-over was lost, one of them to be answered with a 500
    channel, secret = hooked
    receiver.plan.append(Reply(500))
    for _ in range(2):
        event_emit(channel_id=channel.pk, type="conversation.closed", data={"conversation": {}})

    # when
    call_command("webhook", "deliver")

    # then
    assert capsys.readouterr().out == "Attempts: 2 (1 delivered, 1 to retry or failed)\n"
    assert len(receiver.requests) == 2
    pending = WebhookDelivery.objects.get(status="PENDING")
    assert pending.next_attempt_at > timezone.now()


def test_a_secret_stays_readable_after_secret_key_rotation_with_a_fallback(hooked, receiver, settings):
    # given: SECRET_KEY rotated the Django way
    channel, secret = hooked
    old_key = settings.SECRET_KEY
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a-new-secret-key-" + "x" * 40, [old_key]
    from webhooks.delivery import delivery_attempt

    event = event_emit(channel_id=channel.pk, type="conversation.closed", data={"conversation": {}})
    assert delivery_attempt(delivery_id=event.deliveries.get().pk).outcome == "succeeded"
    verified(receiver.requests[0], secret)

    # when: the old key is dropped before the secret was renewed
    settings.SECRET_KEY_FALLBACKS = []
    event = event_emit(channel_id=channel.pk, type="conversation.closed", data={"conversation": {}})
    made = delivery_attempt(delivery_id=event.deliveries.get().pk)

    # then: nothing is sent unsigned or badly signed; the delivery waits for a new secret
    assert made.outcome == "secret_unreadable"
    assert len(receiver.requests) == 1
    assert WebhookDelivery.objects.get(pk=made.delivery_id).status == "PENDING"


def test_set_with_a_loopback_url_says_to_allow_the_host_in_the_commands_own_environment(channel, manage_py, settings):
    # given: the server may allow loopback, but this command's process does not
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = []

    # when
    code, out, err = manage_py("webhook", "set", channel.pk, "http://127.0.0.1:9/hook")

    # then: the error names the setting and shows the command line that passes it
    assert (code, out) == (1, "")
    assert "WEBHOOK_ALLOW_PRIVATE_HOSTS" in err and "manage.py's own" in err
    assert (
        f"For this command: WEBHOOK_ALLOW_PRIVATE_HOSTS=127.0.0.1 .venv/bin/python manage.py webhook set "
        f"{channel.pk} http://127.0.0.1:9/hook"
    ) in err


@pytest.mark.django_db(transaction=True)
def test_the_command_line_the_error_shows_sets_the_webhook(channel):
    # given: the refused command's suggestion, run as a shell runs it, on this test's database
    env = server_env(DATABASE_URL=database_url_for_servers())
    env.pop("WEBHOOK_ALLOW_PRIVATE_HOSTS", None)
    command = [str(BIN / "python"), "manage.py", "webhook", "set", channel.pk, "http://127.0.0.1:9/hook"]
    refused = subprocess.run(command, cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1, refused.stderr
    suggestion = refused.stderr.split("For this command: ", 1)[1].strip()

    # when
    done = subprocess.run(
        ["sh", "-c", suggestion.replace(".venv/bin/python", str(BIN / "python"), 1)],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # then
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("whsec_")
    assert WebhookEndpoint.objects.get(channel=channel).url == "http://127.0.0.1:9/hook"
