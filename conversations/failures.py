"""What failed, read from a failed message's `error_code`: the dashboard's and the admin lists' labels.

A message is stored FAILED with the code of the error that ended its request (README's error tables); the
clean-up marks a message whose request died "abandoned" (channels_app/cleanup.py). Operators ask what
failed (the media, the agent, the clock), not which of eleven codes it was, so each code belongs to one
cause. A code this table does not know yet counts as "other" rather than being hidden.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Cause:
    key: str
    label: str  # "Failed: <label>" in lists; a chart's legend
    colour: str  # the dashboard's colour for it, the same in every chart


MEDIA = Cause("media", "media", "#c77c0e")
AGENT = Cause("agent", "agent", "#d9534f")
TIMEOUT = Cause("timeout", "timeout", "#7a3e9d")
BUSY = Cause("busy", "conversation busy", "#2f6f8f")
ABANDONED = Cause("abandoned", "abandoned", "#666666")
INTERNAL = Cause("internal", "internal error", "#333333")
OTHER = Cause("other", "other", "#999999")
CAUSES: tuple[Cause, ...] = (MEDIA, AGENT, TIMEOUT, BUSY, ABANDONED, INTERNAL, OTHER)
ANSWERED_COLOUR = "#417690"  # the admin's own header blue
FAILED_COLOUR = "#ba2121"  # the admin's error red; a failure of any cause where causes are not told apart

_BY_CODE = {
    "media_url_not_allowed": MEDIA,
    "media_unreachable": MEDIA,
    "media_too_large": MEDIA,
    "media_type_mismatch": MEDIA,
    "agent_unavailable": AGENT,
    "agent_timeout": TIMEOUT,
    "conversation_busy": BUSY,  # an earlier message of the conversation held its turn too long
    "abandoned": ABANDONED,  # the request died between accept and record
    "internal_error": INTERNAL,
}


def failure_cause(error_code: str) -> Cause:
    return _BY_CODE.get(error_code, OTHER)


def codes_of(cause: Cause) -> list[str]:
    """The error codes of a cause (empty for OTHER, which is whatever is not listed)."""
    return [code for code, known in _BY_CODE.items() if known == cause]


def known_codes() -> list[str]:
    return list(_BY_CODE)
