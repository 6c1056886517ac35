"""Model factories. Calling a factory (`ChannelFactory()`) is typed as the factory itself (factory-boy's
metaclass `__call__` carries no annotation), so code that mypy checks uses `ChannelFactory.create()`, which
the generic parameter types as the model."""

import factory

from channels_app.models import AIAgent, Channel, KnowledgeEntry, Workspace, WorkspaceApiKey
from channels_app.services import apikey_create


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


class KnowledgeEntryFactory(factory.django.DjangoModelFactory[KnowledgeEntry]):
    class Meta:
        model = KnowledgeEntry

    agent = factory.SubFactory(AIAgentFactory)
    question = "How long does shipping take?"
    answer = "Orders ship within 2 business days."


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
