"""`manage.py bootstrap_demo`'s service: a demo workspace with everything a first request needs, across the
apps (channels_app's workspace, agent, channel and key; billing's credits)."""

import hashlib
import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from billing.credits import credits_grant
from billing.models import UsageLedgerEntry
from channels_app.models import DEFAULT_AGENT_PROVIDER, AIAgent, Channel, KnowledgeEntry, Workspace, WorkspaceApiKey
from channels_app.services import apikey_create

_DEMO_KNOWLEDGE = [
    ("What are your opening hours?", "We are open Monday to Friday, 9:00 to 18:00 (UTC)."),
    (
        "How do I reset my password?",
        "Open the sign-in page and choose \u201cForgot password\u201d. We e-mail you a link that works for one hour.",
    ),
    ("How long does shipping take?", "Orders ship within 2 business days; delivery takes 3 to 5 business days."),
    (
        "Can I get a refund?",
        "Yes. You can ask for a refund within 30 days of purchase.\n\n"
        "Reply with your order number and we will start it; the money is back on your card within 5 to 10 days.",
    ),
]
DEMO_CREDITS = 1000


@transaction.atomic
def demo_bootstrap(*, key_file: Path) -> dict[str, str]:
    """Idempotent: the demo workspace, agent, API channel and credits, and one usable API key.

    The key is kept in plain text in `key_file` (a development convenience under var/) so each run can
    print it; when the file's key no longer works against this database, a new key replaces it.
    """
    workspace, _ = Workspace.objects.get_or_create(slug="demo", defaults={"name": "Demo workspace"})
    if settings.LLM_BASE_URL:
        agent_fields = {
            "provider": "openai",
            "base_url": settings.LLM_BASE_URL,
            "model": settings.LLM_MODEL,
            "api_key_env_var": "LLM_API_KEY",
        }
    else:
        agent_fields = {"provider": DEFAULT_AGENT_PROVIDER, "base_url": "", "model": "", "api_key_env_var": ""}
    agent, created = AIAgent.objects.get_or_create(
        workspace=workspace,
        name="Demo agent",
        defaults={
            "instructions": "You are a friendly support agent for a small online shop. Answer briefly.",
            **agent_fields,
        },
    )
    if not created and any(getattr(agent, field) != value for field, value in agent_fields.items()):
        for field, value in agent_fields.items():
            setattr(agent, field, value)
        agent.save()
    if created:
        KnowledgeEntry.objects.bulk_create(
            [KnowledgeEntry(agent=agent, question=q, answer=a) for q, a in _DEMO_KNOWLEDGE]
        )
    channel, _ = Channel.objects.get_or_create(
        workspace=workspace, name="Demo API channel", defaults={"type": Channel.Type.API, "agent": agent}
    )
    if not UsageLedgerEntry.objects.filter(workspace=workspace).exists():
        credits_grant(workspace=workspace, amount=DEMO_CREDITS, note="demo credits")
    api_key = _demo_key(workspace=workspace, key_file=key_file)
    return {"workspaceId": workspace.pk, "channelId": channel.pk, "apiKey": api_key}


def demo_key_file(*, base_dir: Path, database: dict[str, Any]) -> Path:
    """Where `bootstrap_demo` keeps the demo key of one database: var/demo-key-<hash>.json, the hash taken
    of the engine, host, port and name (never the password). One file per database, so pointing
    DATABASE_URL at another database and back finds the first one's key again instead of minting a new key
    over a shared file."""
    identity = "|".join(str(database.get(part) or "") for part in ("ENGINE", "HOST", "PORT", "NAME"))
    return base_dir / "var" / f"demo-key-{hashlib.sha256(identity.encode()).hexdigest()[:12]}.json"


def demo_base_url(*, bind: str) -> str:
    """The URL a local client reaches a server bound to `bind` (`host:port` or a port) at: a wildcard
    address becomes loopback."""
    host, colon, port = bind.rpartition(":")
    if not colon:
        host, port = "", bind
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "[::1]"
    return f"http://{host}:{port}"


def _demo_key(*, workspace: Workspace, key_file: Path) -> str:
    try:
        saved = json.loads(key_file.read_text())
        key = saved["apiKey"]
        stored = WorkspaceApiKey.objects.filter(prefix=key.partition(".")[0], workspace=workspace).first()
        if stored and stored.is_valid(key) and not stored.revoked and not stored.has_expired:
            return key
    except (OSError, ValueError, KeyError, TypeError):
        pass
    _, key = apikey_create(workspace=workspace, name="demo")
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(json.dumps({"workspaceId": workspace.pk, "apiKey": key}))
    key_file.chmod(0o600)
    return key
