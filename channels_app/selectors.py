from channels_app.models import Channel
from config.errors import ApplicationError
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
        Channel.objects.select_related("agent", "team").filter(pk=channel_id, workspace_id=workspace_id).first()
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
