"""A scripted agent backend for tests, registered under the provider "scripted" through
settings.AGENT_BACKENDS (the `scripted_agent` fixture of tests/conftest.py), the way a deployment adds one.

The agent is the external boundary of a request: a test scripts what it does (answer, fail, wait, look at
the database meanwhile) instead of patching our own code. Each call takes the next step of the script;
once the script is used up, every call answers as the built-in agent would (the agent's knowledge, its
greeting, its fallback), so assertions about the replies' text and the credits hold as with `builtin`.

A step is one of:
- an exception (instance or class), raised, e.g. `AgentTimeout(...)`, or a `BaseException` standing for
  the worker being killed;
- a string: the reply's one message;
- an `AgentReply`: returned as it is;
- a callable `step(agent=..., history=...)`: run (it may post another request, run the clean-up, wait on an
  event); it returns an `AgentReply`, a string, or None to answer as the built-in agent.

Thread-safe: the race tests call it from many request threads at once.
"""

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from channels_app.models import AIAgent
from conversations.agents.base import AgentConfig, AgentReply, HistoryItem
from conversations.agents.builtin import BuiltinAgent

SCRIPTED_PROVIDER = "scripted"
SCRIPTED_BACKEND = "tests.agents.ScriptedAgent"

Step = BaseException | type[BaseException] | str | AgentReply | Callable[..., Any]


@dataclass(frozen=True)
class Call:
    agent: AgentConfig
    history: list[HistoryItem]

    @property
    def content(self) -> dict[str, Any]:
        """The content of the message the agent was asked to answer (the history's last item)."""
        return self.history[-1].content


class ScriptedAgent:
    label = "Scripted (tests)"
    uses_knowledge = True  # its default answer is the built-in agent's, which reads the knowledge

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._builtin = BuiltinAgent()
        self.reset()

    def reset(self) -> None:
        """Forget the script, the calls and the delay (the fixture does this before each test)."""
        with self._lock:
            self._steps: deque[Step] = deque()
            self.calls: list[Call] = []
            self.delay = 0.0

    def script(self, *steps: Step) -> "ScriptedAgent":
        """Append steps: the next calls take them in order, one each."""
        with self._lock:
            self._steps.extend(steps)
        return self

    def take_over(self, agent: AIAgent) -> "ScriptedAgent":
        """Make `agent` (a saved row) answer through this backend from its next message on."""
        AIAgent.objects.filter(pk=agent.pk).update(provider=SCRIPTED_PROVIDER)
        agent.provider = SCRIPTED_PROVIDER
        return self

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.calls)

    def reply(self, *, agent: AgentConfig, history: list[HistoryItem]) -> AgentReply:
        with self._lock:
            self.calls.append(Call(agent=agent, history=history))
            step = self._steps.popleft() if self._steps else None
            delay = self.delay
        if delay:
            time.sleep(delay)  # overlaps concurrent requests while the agent "thinks"
        if isinstance(step, type):  # an exception class
            step = step()
        if isinstance(step, BaseException):
            raise step
        outcome = step(agent=agent, history=history) if callable(step) else step
        if isinstance(outcome, AgentReply):
            return outcome
        if isinstance(outcome, str):
            return AgentReply(texts=[outcome], input_tokens=1, output_tokens=1, raw_model="scripted")
        return self._builtin.reply(agent=agent, history=history)


# The one test copy of an agent's settings: each test names only what it is about (AgentConfig's fields are
# read off the AIAgent row in production; tests/conversations/test_agent_config.py checks the two agree).
_AGENT_CONFIG_BASE: dict[str, Any] = {
    "id": "ag_1",
    "name": "Agent",
    "instructions": "",
    "provider": "builtin",
    "model": "",
    "base_url": "",
    "api_key_env_var": "",
    "temperature": None,
    "max_output_tokens": None,
    "timeout_seconds": 60,
    "transcribe_audio": False,
    "transcription_model": "",
    "greeting_text": "",
    "fallback_text": "",
    "split_threshold_chars": 600,
    "history_max_messages": 20,
    "history_max_chars": 12000,
    "credit_cost_per_reply": 1,
    "credit_cost_per_1k_tokens": 0,
}


def agent_config(**overrides: Any) -> AgentConfig:
    """An AgentConfig snapshot for unit tests, with `overrides` on a neutral built-in agent."""
    return AgentConfig(**{**_AGENT_CONFIG_BASE, **overrides})
