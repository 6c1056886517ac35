"""Errors of the agent backends (conversations/agents/base.py: every provider failure leaves as one of these)."""

from config.errors import ApplicationError


class AgentUnavailable(ApplicationError):
    code = "agent_unavailable"
    status_code = 502
    default_message = "The AI agent could not answer. Your message was stored; retry with the same idempotency key."


class AgentTimeout(ApplicationError):
    code = "agent_timeout"
    status_code = 504
    default_message = (
        "The AI agent did not answer in time. Your message was stored; retry with the same idempotency key."
    )
