"""AgentConfig is read off the AIAgent row by field name (conversations/selectors.py `agent_config`)."""

import dataclasses

from channels_app.models import AIAgent
from conversations.agents.base import AgentConfig
from conversations.selectors import RELATED_FIELDS, agent_config
from tests.factories import WorkspaceFactory


def test_every_agent_config_field_but_the_messages_passages_is_a_field_of_the_agent_model():
    model_fields = {field.name for field in AIAgent._meta.get_fields()}
    config_fields = {field.name for field in dataclasses.fields(AgentConfig)} - set(RELATED_FIELDS)
    assert sorted(config_fields - model_fields) == []


def test_agent_config_copies_the_rows_values(db):
    workspace = WorkspaceFactory()
    agent = AIAgent.objects.create(workspace=workspace, name="Ada", instructions="Be brief.", temperature=0.3)
    config = agent_config(agent=agent)
    for field in dataclasses.fields(AgentConfig):
        if field.name not in (*RELATED_FIELDS, "actions"):
            assert getattr(config, field.name) == getattr(agent, field.name), field.name


def test_agent_config_has_the_actions_only_for_a_provider_that_calls_tools(db):
    workspace = WorkspaceFactory()
    agent = AIAgent.objects.create(workspace=workspace, name="Ada", actions=["close_conversation", "transfer_to_agent"])
    other = AIAgent.objects.create(workspace=workspace, name="Bob")
    AIAgent.objects.create(workspace=WorkspaceFactory(), name="Stranger")

    assert (agent_config(agent=agent).actions, agent_config(agent=agent).tools) == ((), ())  # the built-in agent
    agent.provider = "openai"
    config = agent_config(agent=agent)
    assert config.actions == ("close_conversation", "transfer_to_agent")
    assert config.transfer_targets == ((other.pk, "Bob"),)  # its workspace's other agents only
