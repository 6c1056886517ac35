"""A conversation's `labels` (README "Contact attributes and labels"): the limits and their one check, for
the agent's `add_conversation_labels` action and the admin."""

from typing import Any

LABELS_MAX = 20
LABEL_MAX_CHARS = 64


def labels_errors(labels: Any) -> str | None:
    """Why `labels` cannot be added to a conversation, or None. The count after adding them is checked where
    they are added (`conversation_labels_add`)."""
    if not isinstance(labels, list) or not labels:
        return 'Send a non-empty list of labels, e.g. ["billing", "vip"].'
    if len(labels) > LABELS_MAX:
        return f"Send at most {LABELS_MAX} labels."
    for label in labels:
        if not isinstance(label, str) or not 1 <= len(label.strip()) <= LABEL_MAX_CHARS or "\x00" in label:
            return f"Each label is a string of 1 to {LABEL_MAX_CHARS} characters."
    return None
