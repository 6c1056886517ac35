"""settings.AGENT_BACKENDS: the one list of providers, what a request does with a provider it does not
name, the admin's choices, and the system checks (conversations/agents/checks.py)."""

import pytest
from django.core import checks
from django.core.exceptions import ValidationError

from billing.models import UsageLedgerEntry
from channels_app.models import AIAgent, agent_provider_choices
from conversations.agents.base import get_backend
from conversations.agents.builtin import BuiltinAgent
from conversations.agents.checks import agent_backends_check
from conversations.models import Message
from tests.agents import SCRIPTED_PROVIDER, ScriptedAgent
from tests.conftest import error_of
from tests.factories import AIAgentFactory

BUILTIN = "conversations.agents.builtin.BuiltinAgent"


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [message.id for message in messages if message.id and message.id.startswith("agents.")]


def test_an_agent_whose_provider_is_not_configured_fails_with_502_and_keeps_the_message(api, channel, workspace):
    # given: an agent row naming a provider the setting does not (written around the model's choices)
    AIAgent.objects.filter(pk=channel.agent_id).update(provider="retired-llm")

    # when
    response = api.post()

    # then: an agent failure like any other, not a silent answer from another backend
    assert response.status_code == 502, response.content
    error = error_of(response)
    assert error["code"] == "agent_unavailable"
    assert error["details"] == {"reason": "unknown_provider", "provider": "retired-llm"}
    inbound = Message.objects.get()
    assert (inbound.status, inbound.error_code, inbound.credits_reserved) == ("FAILED", "agent_unavailable", 0)
    assert not Message.objects.filter(direction="OUTBOUND").exists()
    workspace.refresh_from_db()
    assert (workspace.credit_balance, workspace.credit_reserved) == (100, 0)
    assert not UsageLedgerEntry.objects.filter(kind="CHARGE").exists()


def test_a_provider_added_to_the_setting_answers(api, channel, scripted_agent):
    # given: a backend the deployment registered (the scripted one), and an agent naming it
    scripted_agent.take_over(channel.agent).script("Scripted answer.")

    # when
    body = api.post().json()

    # then
    assert [m["content"]["text"]["body"] for m in body["aiMessages"]] == ["Scripted answer."]
    assert scripted_agent.count == 1 and scripted_agent.calls[0].agent.id == channel.agent_id


def test_a_backend_is_made_once_per_path(settings):
    assert get_backend("builtin") is get_backend("builtin")
    settings.AGENT_BACKENDS = {"builtin": BUILTIN, "also-builtin": BUILTIN}
    assert get_backend("also-builtin") is get_backend("builtin")
    assert isinstance(get_backend("builtin"), BuiltinAgent)


def test_the_model_offers_exactly_the_configured_providers(db, settings):
    assert agent_provider_choices() == [("builtin", "Built-in (offline)"), ("openai", "OpenAI-compatible")]
    settings.AGENT_BACKENDS = {**settings.AGENT_BACKENDS, SCRIPTED_PROVIDER: "tests.agents.ScriptedAgent"}
    field = AIAgent._meta.get_field("provider")
    assert (SCRIPTED_PROVIDER, ScriptedAgent.label) in list(field.choices or [])

    scripted = AIAgentFactory.build(workspace=AIAgentFactory().workspace, provider=SCRIPTED_PROVIDER)
    scripted.full_clean()
    unknown = AIAgentFactory.build(workspace=scripted.workspace, provider="retired-llm")
    with pytest.raises(ValidationError) as raised:
        unknown.full_clean()
    assert list(raised.value.message_dict) == ["provider"]


def test_the_shipped_setting_passes_the_checks():
    assert ids(agent_backends_check()) == []


@pytest.mark.parametrize(
    ("backends", "expected"),
    [
        ({"builtin": BUILTIN, "typo": "conversations.agents.builtin.BuiltinAgnet"}, ["agents.E001"]),
        ({"builtin": BUILTIN, "no-reply": "conversations.agents.base.AgentConfig"}, ["agents.E002"]),
        ({"openai": "conversations.agents.openai_agent.OpenAICompatibleAgent"}, ["agents.E003"]),
        ({"builtin": BUILTIN, "a-provider-name-too-long": BUILTIN}, ["agents.E004"]),
        ({}, ["agents.E000"]),
    ],
    ids=["unimportable", "no-reply", "no-default", "name-too-long", "empty"],
)
def test_a_broken_setting_is_an_error_of_manage_py_check(settings, backends, expected):
    settings.AGENT_BACKENDS = backends
    assert ids(checks.run_checks()) == expected


def test_agents_naming_an_unknown_provider_are_a_warning_of_the_database_check(db):
    AIAgentFactory(provider="builtin")
    assert ids(checks.run_checks(databases=["default"])) == []

    AIAgentFactory(provider="retired-llm")
    AIAgentFactory(provider="retired-llm")
    [warning] = [m for m in checks.run_checks(databases=["default"]) if m.id == "agents.W001"]

    assert "'retired-llm'" in warning.msg and warning.level == checks.WARNING
