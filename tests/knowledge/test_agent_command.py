"""`manage.py agent set` (README "Management commands"): only the settings given change, the agent's
settings are printed as JSON, and a value out of range or an unknown agent is refused with a sentence."""

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from channels_app.models import AIAgent
from tests.factories import AIAgentFactory

pytestmark = pytest.mark.django_db


def test_set_changes_only_the_settings_given_and_prints_them(capsys):
    agent = AIAgentFactory.create(knowledge_max_chars=6000)
    call_command("agent", "set", agent.pk, "--embedding-model", " text-embedding-3-small ")
    call_command("agent", "set", agent.pk, "--knowledge-max-passages", "7")
    printed = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (printed["id"], printed["embeddingModel"], printed["knowledgeMaxPassages"]) == (
        agent.pk,
        "text-embedding-3-small",
        7,
    )
    stored = AIAgent.objects.get(pk=agent.pk)
    assert (stored.embedding_model, stored.knowledge_max_passages, stored.knowledge_max_chars) == (
        "text-embedding-3-small",
        7,
        6000,
    )


@pytest.mark.parametrize(
    "arguments",
    [["--knowledge-max-passages", "51"], ["--knowledge-max-chars", "-1"], ["--knowledge-max-passages", "\u00b2"]],
)
def test_set_refuses_a_value_out_of_range_and_changes_nothing(arguments):
    agent = AIAgentFactory.create(knowledge_max_passages=4)
    with pytest.raises(CommandError, match="whole number from 0 to"):
        call_command("agent", "set", agent.pk, *arguments)
    assert AIAgent.objects.get(pk=agent.pk).knowledge_max_passages == 4


def test_set_names_an_unknown_agent():
    with pytest.raises(CommandError, match="ag_missing"):
        call_command("agent", "set", "ag_missing", "--knowledge-max-passages", "2")
