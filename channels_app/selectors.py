import threading

from channels_app.models import AIAgent, Channel, KnowledgeEntry
from config.errors import ChannelNotFound, ChannelUnavailable
from conversations.agents.base import AgentConfig


def channel_get_for_workspace(*, channel_id: str, workspace_id: str) -> Channel:
    """The workspace's channel with its agent and team (one query). Another workspace's channel is "not
    found", never "forbidden": its existence is not confirmed."""
    channel = Channel.objects.select_related("agent", "team").filter(pk=channel_id, workspace_id=workspace_id).first()
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


# Knowledge entries per (agent, updated_at): the built-in agent reads them on every message, and editing
# an agent or its entries in the admin saves the agent, which moves `updated_at` and so misses this cache.
_knowledge_cache: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
_knowledge_lock = threading.Lock()
_KNOWLEDGE_CACHE_MAX = 256


def _knowledge(agent: AIAgent) -> tuple[tuple[str, str], ...]:
    key = (agent.pk, agent.updated_at.isoformat())
    cached = _knowledge_cache.get(key)
    if cached is None:
        cached = tuple(KnowledgeEntry.objects.filter(agent=agent).values_list("question", "answer"))
        with _knowledge_lock:
            if len(_knowledge_cache) >= _KNOWLEDGE_CACHE_MAX:
                _knowledge_cache.clear()
            _knowledge_cache[key] = cached
    return cached


def agent_config(*, agent: AIAgent) -> AgentConfig:
    return AgentConfig(
        id=agent.pk,
        name=agent.name,
        instructions=agent.instructions,
        provider=agent.provider,
        model=agent.model,
        base_url=agent.base_url,
        api_key_env_var=agent.api_key_env_var,
        temperature=agent.temperature,
        max_output_tokens=agent.max_output_tokens,
        timeout_seconds=agent.timeout_seconds,
        transcribe_audio=agent.transcribe_audio,
        greeting_text=agent.greeting_text,
        fallback_text=agent.fallback_text,
        split_threshold_chars=agent.split_threshold_chars,
        history_max_messages=agent.history_max_messages,
        history_max_chars=agent.history_max_chars,
        credit_cost_per_reply=agent.credit_cost_per_reply,
        credit_cost_per_1k_tokens=agent.credit_cost_per_1k_tokens,
        knowledge=_knowledge(agent) if agent.provider == AIAgent.Provider.BUILTIN else (),
    )
