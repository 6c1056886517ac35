"""System checks of settings.AGENT_BACKENDS and of the agents that name a provider (registered in
conversations/apps.py). `manage.py check` runs the first; the database one runs with `--database default`
and before `migrate`, so a deployment that drops a provider still in use hears of it.
"""

from typing import Any

from django.conf import settings
from django.core import checks
from django.db import DatabaseError, connections

from channels_app.models import DEFAULT_AGENT_PROVIDER, AIAgent
from conversations.agents.base import backend_class

_PROVIDER_MAX_LENGTH = 20  # AIAgent.provider's max_length: a longer name could not be stored


def agent_backends_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Each path of settings.AGENT_BACKENDS imports and has a `reply`; the default provider is there."""
    backends = getattr(settings, "AGENT_BACKENDS", None)
    if not isinstance(backends, dict) or not backends:
        return [
            checks.Error(
                "settings.AGENT_BACKENDS must map provider names to backend classes.",
                hint='e.g. {"builtin": "conversations.agents.builtin.BuiltinAgent"}',
                id="agents.E000",
            )
        ]
    errors: list[checks.CheckMessage] = []
    for name, path in backends.items():
        try:
            cls = backend_class(path)
        except ImportError as error:
            errors.append(
                checks.Error(
                    f"AGENT_BACKENDS[{name!r}] = {path!r} cannot be imported: {error}.",
                    hint="Name a class by its dotted path, e.g. conversations.agents.builtin.BuiltinAgent.",
                    id="agents.E001",
                )
            )
            continue
        if not callable(getattr(cls, "reply", None)):
            errors.append(
                checks.Error(
                    f"AGENT_BACKENDS[{name!r}] = {path!r} has no reply() method.",
                    hint="A backend implements conversations.agents.base.AgentBackend.",
                    id="agents.E002",
                )
            )
        if len(name) > _PROVIDER_MAX_LENGTH:
            errors.append(
                checks.Error(
                    f"The provider name {name!r} is longer than {_PROVIDER_MAX_LENGTH} characters.",
                    hint="An agent's provider column holds at most that many; choose a shorter name.",
                    id="agents.E004",
                )
            )
    if DEFAULT_AGENT_PROVIDER not in backends:
        errors.append(
            checks.Error(
                f"settings.AGENT_BACKENDS does not name {DEFAULT_AGENT_PROVIDER!r}, every new agent's provider.",
                hint='Keep "builtin": "conversations.agents.builtin.BuiltinAgent" in AGENT_BACKENDS.',
                id="agents.E003",
            )
        )
    return errors


def agent_providers_in_database_check(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Agents whose provider settings.AGENT_BACKENDS does not name: each of their messages would fail
    with 502 agent_unavailable (details.reason "unknown_provider")."""
    warnings: list[checks.CheckMessage] = []
    known = set(getattr(settings, "AGENT_BACKENDS", None) or {})
    for alias in databases or ():
        try:
            if AIAgent._meta.db_table not in connections[alias].introspection.table_names():
                continue  # not migrated yet
            unknown = sorted(
                AIAgent.objects.using(alias).exclude(provider__in=known).values_list("provider", flat=True).distinct()
            )
        except DatabaseError:
            continue  # a database that does not answer has its own errors to report
        if unknown:
            warnings.append(
                checks.Warning(
                    f"AI agents in database {alias!r} name providers that settings.AGENT_BACKENDS does not: "
                    f"{', '.join(map(repr, unknown))}. Their messages fail with 502 agent_unavailable.",
                    hint="Add the providers to AGENT_BACKENDS, or change those agents' provider in the admin.",
                    obj=AIAgent,
                    id="agents.W001",
                )
            )
    return warnings
