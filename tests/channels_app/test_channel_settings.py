"""A channel's settings (README "Bursts of short messages", "Management commands"): `manage.py channel set`
and the admin's channel form."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, transaction

from channels_app.admin import ChannelAdminForm
from channels_app.models import Channel
from tests.factories import ChannelFactory


def test_channel_set_changes_only_what_it_is_given_and_prints_the_settings(db, capsys):
    channel = ChannelFactory()

    call_command("channel", "set", channel.pk, "--burst-mode", "latest", "--burst-window-ms", "1500")
    call_command("channel", "set", channel.pk, "--inactivity-timeout", "60")

    out = capsys.readouterr().out.splitlines()
    assert out[-3:] == ["burst mode: latest", "burst window: 1500 ms", "inactivity timeout: 60 s"]
    assert out[0] == f"channel: {channel.pk} ({channel.name})"
    channel.refresh_from_db()
    assert (channel.burst_mode, channel.burst_window_ms, channel.inactivity_timeout_seconds) == ("latest", 1500, 60)


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (["--burst-mode", "newest"], "'newest' is not a burst mode. Use queue or latest."),
        (["--burst-window-ms", "15001"], "15001 is out of range. Use 0 to 15000 milliseconds."),
        (["--burst-window-ms", "-1"], "-1 is out of range. Use 0 to 15000 milliseconds."),
        (["--inactivity-timeout", "-5"], "or 0 to never close for inactivity"),
    ],
)
def test_channel_set_refuses_a_bad_value_with_a_sentence_and_changes_nothing(db, arguments, said):
    channel = ChannelFactory()
    with pytest.raises(CommandError) as refused:
        call_command("channel", "set", channel.pk, "--burst-window-ms", "100", *arguments)
    assert said in str(refused.value)
    channel.refresh_from_db()
    assert (channel.burst_mode, channel.burst_window_ms) == ("queue", 0)


def test_channel_set_names_an_unknown_channel(db):
    with pytest.raises(CommandError, match="No channel with id 'ch_missing'"):
        call_command("channel", "set", "ch_missing", "--burst-mode", "latest")


def test_the_database_refuses_a_window_over_the_cap(db):
    channel = ChannelFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Channel.objects.filter(pk=channel.pk).update(burst_window_ms=15001)


def _form(channel: Channel, **changes) -> ChannelAdminForm:
    data = {
        "workspace": channel.workspace_id,
        "name": channel.name,
        "type": channel.type,
        "is_active": "on",
        "agent": channel.agent_id,
        **changes,
    }
    return ChannelAdminForm(data=data, instance=channel)


def test_the_admin_form_sets_the_burst_settings_and_keeps_the_defaults_when_left_out(db):
    channel = ChannelFactory()

    left_out = _form(channel)
    assert left_out.is_valid(), left_out.errors
    assert (left_out.cleaned_data["burst_mode"], left_out.cleaned_data["burst_window_ms"]) == ("queue", 0)
    changed = _form(channel, burst_mode="latest", burst_window_ms="2000")
    assert changed.is_valid(), changed.errors
    changed.save()
    channel.refresh_from_db()
    assert (channel.burst_mode, channel.burst_window_ms) == ("latest", 2000)


def test_the_admin_form_refuses_a_window_over_the_cap(db):
    form = _form(ChannelFactory(), burst_mode="latest", burst_window_ms="20000")
    assert not form.is_valid()
    assert "burst_window_ms" in form.errors
