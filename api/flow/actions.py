"""The agent's actions in one message's turn (README "Actions"): the tools offered to the model, each call
checked and run, and what the turn leaves for the record phase.

Built-in actions change nothing while the agent thinks: each is checked and remembered here (`TurnEffects`),
and the record phase writes its effect in the transaction that stores the replies (api/flow/writes.py), so a
turn that fails changes nothing. An HTTP tool's call is a side effect outside our database, so it is stored
before it is made and its result after (conversations.models.ToolCall, by message and position): a replay or
a retry of the message finds the finished call and reuses its result, never calling again. Each access to
those rows is a short query whose connection goes straight back to the pool (the think phase holds none).

Whatever the model sends (an unknown tool, arguments that are not JSON or outside the schema, a transfer to
an agent of another workspace, too many calls) becomes an error result for it, never an exception.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError
from django.utils import timezone

from channels_app.tool_schema import arguments_clean, strict_schema
from channels_app.validators import HTTP_TOOL_ACTION
from config.db import connection_release
from contacts.attributes import ATTRIBUTE_KEY_MAX, ATTRIBUTE_VALUE_MAX, ATTRIBUTES_MAX_KEYS, attributes_changes_errors
from conversations.agents.base import AgentConfig, ToolSpec
from conversations.labels import LABEL_MAX_CHARS, LABELS_MAX, labels_errors
from conversations.models import ToolCall
from webhooks.tools import tool_call_send

MAX_CALLS_PER_TURN = 20  # over all rounds: a model that asks for more gets error results

_BUILTIN_TOOLS: dict[str, dict[str, Any]] = {
    "close_conversation": {
        "description": "Close the conversation after this reply, when the contact's request is fully handled.",
        "parameters": {"type": "object", "properties": {}, "required": [], "additionalProperties": False},
    },
    "set_contact_attributes": {
        "description": "Remember facts about the contact for later conversations (e.g. preferred language, "
        f"order number). Keys of 1-{ATTRIBUTE_KEY_MAX} characters, string values of at most "
        f"{ATTRIBUTE_VALUE_MAX} characters, null removes a key; at most {ATTRIBUTES_MAX_KEYS} keys in all.",
        "parameters": {
            "type": "object",
            "properties": {
                "attributes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"key": {"type": "string"}, "value": {"type": ["string", "null"]}},
                        "required": ["key", "value"],
                        "additionalProperties": False,
                    },
                }
            },
            "required": ["attributes"],
            "additionalProperties": False,
        },
    },
    "add_conversation_labels": {
        "description": f"Label the conversation (at most {LABELS_MAX} labels of 1-{LABEL_MAX_CHARS} characters).",
        "parameters": {
            "type": "object",
            "properties": {"labels": {"type": "array", "items": {"type": "string"}}},
            "required": ["labels"],
            "additionalProperties": False,
        },
    },
    "transfer_to_agent": {
        "description": "Hand the conversation to another AI agent, who answers the contact's next messages.",
        "parameters": {
            "type": "object",
            "properties": {"agentId": {"type": "string"}},
            "required": ["agentId"],
            "additionalProperties": False,
        },
    },
}


@dataclass
class TurnEffects:
    """What the turn's built-in actions ask the record phase to write."""

    close: bool = False
    attributes: dict[str, str | None] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    transfer_to: tuple[str, str] | None = None  # (agent id, name)

    def __bool__(self) -> bool:
        return bool(self.close or self.attributes or self.labels or self.transfer_to)


class ActionRun:
    """An `ActionRunner` (conversations/agents/base.py) for one message's turn."""

    def __init__(
        self,
        *,
        agent: AgentConfig,
        message_id: str,
        conversation_id: str,
        contact_id: str,
        contact_attributes: dict[str, str],
        on_action: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.agent = agent
        self.ids = {"conversationId": conversation_id, "contactId": contact_id, "messageId": message_id}
        self.message_id = message_id
        self.attributes = dict(contact_attributes)
        self.effects = TurnEffects()
        self.actions: list[dict[str, Any]] = []  # as stored on the message: with result and durationMs
        self.on_action = on_action
        self._http = {tool.name: tool for tool in agent.tools}
        self._stored: list[ToolCall] | None = None  # the message's stored calls, read at the first HTTP call
        self._used: set[int] = set()  # positions of stored calls this run has matched

    def tools(self) -> list[dict[str, Any]]:
        offered = []
        for name in self.agent.actions:
            spec = _BUILTIN_TOOLS[name]
            description = spec["description"]
            if name == "transfer_to_agent":
                description += " Agents: " + json.dumps(
                    [{"agentId": id, "name": agent_name} for id, agent_name in self.agent.transfer_targets],
                    ensure_ascii=False,
                )
            offered.append(_function(name, description, spec["parameters"]))
        for tool in self.agent.tools:
            offered.append(_function(tool.name, tool.description, strict_schema(tool.parameters)))
        return offered

    def call(self, *, name: str, arguments: str, deadline: float) -> str:
        started = time.monotonic()
        try:
            parsed = json.loads(arguments or "{}")
        except ValueError:
            parsed = None
        if len(self.actions) >= MAX_CALLS_PER_TURN:
            return _error(f"At most {MAX_CALLS_PER_TURN} tool calls per message. Answer the contact now.")
        if name in self.agent.actions:
            kind = name
            result, ok = self._builtin(name, parsed)
        elif name in self._http:
            kind = HTTP_TOOL_ACTION
            result, ok = self._http_call(self._http[name], parsed, deadline=deadline)
        else:
            return _error(f"There is no tool named {name[:64]!r}. Use only the tools offered.")
        record = {
            "type": kind,
            "name": name,
            "status": "succeeded" if ok else "failed",
            "arguments": parsed if isinstance(parsed, dict) else {},
            "result": result[:2000],
            "durationMs": round((time.monotonic() - started) * 1000),
        }
        self.actions.append(record)
        if self.on_action is not None:
            self.on_action(record)
        return result

    # --- built-in actions: checked now, written by the record phase ---------------------------------------

    def _builtin(self, name: str, arguments: Any) -> tuple[str, bool]:
        if not isinstance(arguments, dict):
            return _error("The arguments are not a JSON object."), False
        schema = _BUILTIN_TOOLS[name]["parameters"]
        if name == "close_conversation":
            if arguments:
                return _error("close_conversation takes no arguments."), False
            self.effects.close = True
            return _ok("The conversation will be closed after this reply."), True
        if name == "set_contact_attributes":
            items = arguments.get("attributes")
            if set(arguments) != {"attributes"} or not isinstance(items, list):
                return _error(f"Send {json.dumps(schema['properties'])}."), False
            if not all(isinstance(item, dict) and set(item) == {"key", "value"} for item in items):
                return _error('Each attribute is {"key": string, "value": string or null}.'), False
            changes = {str(item["key"]): item["value"] for item in items}
            errors = attributes_changes_errors(changes)
            merged = {**self.attributes, **changes}
            if not errors and sum(value is not None for value in merged.values()) > ATTRIBUTES_MAX_KEYS:
                errors = {"attributes": f"A contact has at most {ATTRIBUTES_MAX_KEYS} attributes."}
            if errors:
                return _error(json.dumps(errors, ensure_ascii=False)), False
            self.attributes = {key: value for key, value in merged.items() if value is not None}
            self.effects.attributes.update(changes)
            return _ok("Saved."), True
        if name == "add_conversation_labels":
            labels = arguments.get("labels")
            problem = labels_errors(labels) if set(arguments) == {"labels"} else 'Send {"labels": [...]}.'
            if problem is not None:
                return _error(problem), False
            for label in labels or []:
                if label.strip() not in self.effects.labels:
                    self.effects.labels.append(label.strip())
            return _ok("Labelled."), True
        target = arguments.get("agentId")
        names = dict(self.agent.transfer_targets)
        if set(arguments) != {"agentId"} or target not in names:
            return _error("No such agent to transfer to. Use an agentId from the tool's description."), False
        self.effects.transfer_to = (target, names[target])
        return _ok(f"Transferred to {names[target]}, who answers the contact's next messages."), True

    # --- HTTP tools: stored before the call, the result after it ------------------------------------------

    def _http_call(self, tool: ToolSpec, arguments: Any, *, deadline: float) -> tuple[str, bool]:
        if not isinstance(arguments, dict):
            return _error("The arguments are not a JSON object."), False
        cleaned, errors = arguments_clean(tool.parameters, arguments)
        if errors:
            return _error("; ".join(errors[:10])), False
        stored = self._stored_match(tool.name, cleaned)
        if stored is not None and stored.status != ToolCall.Status.STARTED:
            return stored.result, stored.status == ToolCall.Status.SUCCEEDED  # made before: never again
        if stored is not None and tool.method == "POST":
            # An earlier attempt started this call and died before its result was stored: it may have
            # happened. A POST is not repeated (README "HTTP tools").
            result = _error("An earlier attempt made this call and its outcome is unknown; it is not repeated.")
            self._finish(stored, result=result, ok=False, duration_ms=0)
            return result, False
        if stored is None:
            stored = self._store_start(tool.name, cleaned)
            if stored is None:
                return _error("This call is being made by another attempt of the same message."), False
        started = time.monotonic()
        answer = tool_call_send(
            tool=tool,
            arguments=cleaned,
            ids=self.ids,
            idempotency_key=f"{self.message_id}.{stored.position}",
            deadline=deadline,
        )
        result = answer.for_model()
        self._finish(
            stored, result=result, ok=answer.error is None, duration_ms=round((time.monotonic() - started) * 1000)
        )
        return result, answer.error is None

    def _stored_match(self, name: str, arguments: dict[str, Any]) -> ToolCall | None:
        if self._stored is None:
            self._stored = list(ToolCall.objects.filter(message_id=self.message_id).order_by("position"))
            connection_release()
        for call in self._stored:
            if call.position not in self._used and call.name == name and call.arguments == arguments:
                self._used.add(call.position)
                return call
        return None

    def _store_start(self, name: str, arguments: dict[str, Any]) -> ToolCall | None:
        assert self._stored is not None
        position = max((call.position for call in self._stored), default=0) + 1
        call = ToolCall(message_id=self.message_id, position=position, name=name, arguments=arguments)
        try:
            call.save(force_insert=True)
        except IntegrityError:
            return None  # another run of this message took the position first
        finally:
            connection_release()
        self._stored.append(call)
        self._used.add(position)
        return call

    def _finish(self, call: ToolCall, *, result: str, ok: bool, duration_ms: int) -> None:
        ToolCall.objects.filter(pk=call.pk).update(
            status=ToolCall.Status.SUCCEEDED if ok else ToolCall.Status.FAILED,
            result=result,
            duration_ms=duration_ms,
            finished_at=timezone.now(),
        )
        connection_release()


def _function(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters, "strict": True},
    }


def _ok(message: str) -> str:
    return json.dumps({"ok": True, "message": message}, ensure_ascii=False)


def _error(message: str) -> str:
    return json.dumps({"ok": False, "error": message}, ensure_ascii=False)
