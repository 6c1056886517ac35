from functools import cache

from django.db import connection

from channels_app.models import AIAgent, Channel, Team
from config.errors import ApplicationError
from config.statements import Columns, columns, quote
from config.text import text_storable


class ChannelNotFound(ApplicationError):
    code = "channel_not_found"
    status_code = 404
    default_message = "No channel with this id exists in your workspace. Check the channelId in the URL."


class ChannelUnavailable(ApplicationError):
    code = "channel_unavailable"
    status_code = 400
    default_message = "The channel is not an active API channel with an AI agent."


def channel_get_for_workspace(*, channel_id: str, workspace_id: str) -> Channel:
    """The workspace's channel with its agent and team (one query). Another workspace's channel is "not
    found", never "forbidden": its existence is not confirmed. An id no column could hold (U+0000, which a
    percent-encoded `%00` in the URL produces) names no channel either, and is never sent to the database."""
    channel = (
        _channel_with_agent_and_team(channel_id=channel_id, workspace_id=workspace_id)
        if text_storable(channel_id)
        else None
    )
    if channel is None:
        raise ChannelNotFound(
            "No channel with this id exists in your workspace. Check the channelId in the URL "
            "and that the API key belongs to the channel's workspace.",
            details={"channelId": channel_id},
        )
    if channel.type != Channel.Type.API or not channel.is_active or channel.agent is None:
        reason = (
            "not an API channel"
            if channel.type != Channel.Type.API
            else "inactive"
            if not channel.is_active
            else "without an AI agent"
        )
        raise ChannelUnavailable(
            f"The channel is {reason}. Post to an active API channel that has an AI agent, "
            "or ask an operator to configure this one.",
            details={"channelId": channel_id, "reason": reason.replace(" ", "_")},
        )
    return channel


def _channel_with_agent_and_team(*, channel_id: str, workspace_id: str) -> Channel | None:
    """`Channel.objects.select_related("agent", "team").filter(pk=..., workspace_id=...).first()` in hand-written
    SQL (config/statements.py): the same one query, without the ORM's compiler, which cost the messages
    endpoint about 1 ms of CPU per message for this query alone."""
    sql, parts = _channel_sql()
    with connection.cursor() as cursor:
        cursor.execute(sql, [channel_id, workspace_id])
        row = cursor.fetchone()
    if row is None:
        return None
    channel_columns, agent_columns, team_columns = parts
    agent_at, team_at = len(channel_columns), len(channel_columns) + len(agent_columns)
    channel = channel_columns.instance(row[:agent_at])
    assert isinstance(channel, Channel)
    agent = agent_columns.instance(row[agent_at:team_at]) if row[agent_at] is not None else None
    team = team_columns.instance(row[team_at:]) if row[team_at] is not None else None
    Channel.agent.field.set_cached_value(channel, agent)
    Channel.team.field.set_cached_value(channel, team)
    return channel


@cache
def _channel_sql() -> tuple[str, tuple[Columns, Columns, Columns]]:
    parts = (columns(Channel, "ch"), columns(AIAgent, "ag"), columns(Team, "tm"))
    sql = (
        f"SELECT {', '.join(part.sql for part in parts)} FROM {quote(Channel._meta.db_table)} ch "
        f"LEFT JOIN {quote(AIAgent._meta.db_table)} ag ON ag.{quote('id')} = ch.{quote(Channel.agent.field.column)} "
        f"LEFT JOIN {quote(Team._meta.db_table)} tm ON tm.{quote('id')} = ch.{quote(Channel.team.field.column)} "
        f"WHERE ch.{quote('id')} = %s AND ch.{quote(Channel.workspace.field.column)} = %s"
    )
    return sql, parts
