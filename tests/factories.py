"""Model factories. Calling a factory (`ChannelFactory()`) is typed as the factory itself (factory-boy's
metaclass `__call__` carries no annotation), so code that mypy checks uses `ChannelFactory.create()`, which
the generic parameter types as the model."""

import re

import factory

from channels_app.models import AIAgent, Channel, Workspace, WorkspaceApiKey
from channels_app.services import apikey_create
from knowledge.models import Document
from knowledge.services import document_put_text


class WorkspaceFactory(factory.django.DjangoModelFactory[Workspace]):
    class Meta:
        model = Workspace

    name = factory.Sequence(lambda n: f"Workspace {n}")
    slug = factory.Sequence(lambda n: f"workspace-{n}")
    credit_balance = 0


class AIAgentFactory(factory.django.DjangoModelFactory[AIAgent]):
    class Meta:
        model = AIAgent

    workspace = factory.SubFactory(WorkspaceFactory)
    name = factory.Sequence(lambda n: f"Agent {n}")
    instructions = "You are a helpful support agent."
    provider = "builtin"
    credit_cost_per_reply = 1


def document_for(agent: AIAgent, *, title: str, text: str, key: str | None = None) -> Document:
    """A text document of the agent's knowledge, indexed as a PUT of it would be (its key from the title)."""
    key = key or re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:128] or "document"
    document, _ = document_put_text(agent=agent, key=key, title=title, text=text, metadata={})
    return document


class ChannelFactory(factory.django.DjangoModelFactory[Channel]):
    class Meta:
        model = Channel

    workspace = factory.SubFactory(WorkspaceFactory)
    name = factory.Sequence(lambda n: f"Channel {n}")
    type = Channel.Type.API
    is_active = True
    agent = factory.LazyAttribute(lambda channel: AIAgentFactory(workspace=channel.workspace))


def api_key_for(workspace: Workspace, name: str = "test") -> tuple[WorkspaceApiKey, str]:
    return apikey_create(workspace=workspace, name=name)
