"""A contact's `attributes` (README "Contact attributes and labels"): a flat object the agent and the
integrator write and the agent reads with every message. The limits and their one check live here: the PATCH
endpoint (api/edge/read_views.py) and the agent's `set_contact_attributes` action (api/flow/actions.py) both use it."""

from typing import Any

ATTRIBUTES_MAX_KEYS = 50
ATTRIBUTE_KEY_MAX = 64
ATTRIBUTE_VALUE_MAX = 512


def attributes_changes_errors(changes: Any) -> dict[str, str]:
    """Why `changes` (`{"key": "value" | null}`: null removes the key) cannot be merged into a contact's
    attributes, per key; {} when it can. The count of keys after the merge is checked where it is merged
    (`contact_attributes_merge`), under the row's lock."""
    if not isinstance(changes, dict):
        return {"attributes": 'Send a flat JSON object of string values or null, e.g. {"language": "pt"}.'}
    if not changes:
        return {"attributes": "Send at least one key to set (a string) or to remove (null)."}
    if len(changes) > ATTRIBUTES_MAX_KEYS:
        return {"attributes": f"Send at most {ATTRIBUTES_MAX_KEYS} keys; this object has {len(changes)}."}
    errors: dict[str, str] = {}
    for key, value in changes.items():
        if not 1 <= len(key) <= ATTRIBUTE_KEY_MAX or "\x00" in key:
            errors[key or "(empty)"] = f"Send keys of 1 to {ATTRIBUTE_KEY_MAX} characters, without null characters."
        elif value is not None and not isinstance(value, str):
            errors[key] = f"Send a string of at most {ATTRIBUTE_VALUE_MAX} characters, or null to remove the key."
        elif isinstance(value, str) and (len(value) > ATTRIBUTE_VALUE_MAX or "\x00" in value):
            errors[key] = f"Send at most {ATTRIBUTE_VALUE_MAX} characters, without null characters."
    return errors
