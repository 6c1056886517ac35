"""Several days of real traffic for the dashboard's tests: messages posted through the endpoint (so the
rollup is fed by the record and failure paths, and the ledger by the charges), on past days by time travel.

Two workspaces: "Acme shop" with a built-in agent ("Support API") and an OpenAI-compatible one ("Sales
API", a pytest-httpserver stand-in that answers after a delay, fails with 500 on "[fail]" and outlasts the
agent's timeout on "[slow]"), and "Globex" with a built-in agent ("Help desk"). Failures of every kind:
media (a private address), agent (500), timeout, abandoned (a dead request, released by the clean-up).
"""

import json
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import cycle
from typing import Any

import time_machine
from django.db import connection
from django.db.models import F
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from analytics.stats import message_stats_answered_statement
from api.maintenance.cleanup import abandoned_messages_release
from billing.credits import credits_grant
from channels_app.models import Channel, Workspace
from contacts.models import Contact
from conversations.agents import openai_agent
from conversations.models import Conversation, Message
from tests.conftest import Api
from tests.factories import AIAgentFactory, ChannelFactory, KnowledgeEntryFactory, WorkspaceFactory, api_key_for

SLOW_SECONDS, AGENT_TIMEOUT_SECONDS = 1.2, 0.6
DELAYS = (0.02, 0.05, 0.08, 0.12, 0.2, 0.3)  # the stand-in's answer times, in turn


@dataclass
class Seeded:
    acme: Workspace
    globex: Workspace
    support: Channel
    sales: Channel
    helpdesk: Channel
    days: list[date]  # oldest first


def llm_stub(httpserver: HTTPServer) -> None:
    delays = cycle(DELAYS)

    def handler(request: Request) -> Response:
        text = json.loads(request.get_data())["messages"][-1]["content"]
        text = text if isinstance(text, str) else json.dumps(text)
        if "[fail]" in text:
            return Response("upstream broke", status=500)
        time.sleep(SLOW_SECONDS if "[slow]" in text else next(delays))
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "stand-in",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Noted."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 40, "completion_tokens": 5, "total_tokens": 45},
        }
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_handler(handler)


def _text(identifier: str, body: str) -> dict:
    return {"type": "TEXT", "contactIdentifier": identifier, "contactName": "", "content": {"text": {"body": body}}}


def _abandon_one(channel: Channel, at: datetime) -> None:
    """A message whose request died after the accept phase: PENDING, holding a credit, its lease long gone."""
    contact, _ = Contact.objects.get_or_create(workspace=channel.workspace, identifier="gone@acme.test")
    conversation = Conversation.objects.filter(channel=channel, contact=contact).first() or Conversation.objects.create(
        workspace=channel.workspace, channel=channel, contact=contact, agent=channel.agent, last_seq=0
    )
    Conversation.objects.filter(pk=conversation.pk).update(last_seq=F("last_seq") + 1, last_message_at=at)
    conversation.refresh_from_db()
    Message.objects.create(
        conversation=conversation,
        seq=conversation.last_seq,
        direction=Message.Direction.INBOUND,
        type=Message.Type.TEXT,
        content={"text": {"body": "anyone there?"}},
        status=Message.Status.PENDING,
        lease_until=at + timedelta(seconds=150),
        credits_reserved=1,
    )
    Workspace.objects.filter(pk=channel.workspace_id).update(credit_reserved=F("credit_reserved") + 1)


def seed_days(*, client, httpserver: HTTPServer, today: date, days: int = 6) -> Seeded:
    """`days` days up to `today`: on day k (0 = oldest) 3 + k answered messages on Support, two on Sales
    (delays from DELAYS), one on Help desk, one IMAGE refused for its private address; on every other day
    an agent failure and an abandoned message; on the last day an agent timeout."""
    llm_stub(httpserver)
    acme = WorkspaceFactory.create(name="Acme shop", slug="acme")
    globex = WorkspaceFactory.create(name="Globex", slug="globex")
    for workspace in (acme, globex):
        credits_grant(workspace=workspace, amount=10_000, note="seed")
    support = ChannelFactory.create(workspace=acme, name="Support API")
    KnowledgeEntryFactory.create(agent=support.agent, question="Can I get a refund?", answer="Yes, within 30 days.")
    sales_agent = AIAgentFactory.create(
        workspace=acme,
        name="Sales agent",
        provider="openai",
        base_url=httpserver.url_for("/v1"),
        model="stand-in",
        timeout_seconds=AGENT_TIMEOUT_SECONDS,
        credit_cost_per_reply=2,
    )
    sales = ChannelFactory.create(workspace=acme, name="Sales API", agent=sales_agent)
    helpdesk = ChannelFactory.create(workspace=globex, name="Help desk")
    acme_key, globex_key = api_key_for(acme)[1], api_key_for(globex)[1]
    apis = {
        "support": Api(client, support, acme_key),
        "sales": Api(client, sales, acme_key),
        "helpdesk": Api(client, helpdesk, globex_key),
    }
    seeded_days = [today - timedelta(days=offset) for offset in range(days - 1, -1, -1)]
    retries, openai_agent.MAX_RETRIES = openai_agent.MAX_RETRIES, 0  # a 500 fails at once, no backoff
    try:
        for index, day in enumerate(seeded_days):
            at = datetime(day.year, day.month, day.day, 10, 0, tzinfo=UTC)
            with time_machine.travel(at, tick=True):
                for n in range(3 + index):
                    assert apis["support"].post(_text(f"c{n}@acme.test", "Can I get a refund?")).status_code == 200
                for n in range(2):
                    assert apis["sales"].post(_text(f"lead{n}@acme.test", f"Quote {index}.{n}")).status_code == 200
                assert apis["helpdesk"].post(_text("+15550100", "Hello")).status_code == 200
                image = {
                    "type": "IMAGE",
                    "contactIdentifier": "c0@acme.test",
                    "content": {"image": {"url": "http://10.1.2.3/receipt.png"}},
                }
                assert apis["support"].post(image).status_code == 400  # media_url_not_allowed
                if index % 2 == 0:
                    assert apis["sales"].post(_text("lead9@acme.test", "[fail] quote")).status_code == 502
                    _abandon_one(support, at)
                if index == len(seeded_days) - 1:
                    assert apis["sales"].post(_text("lead8@acme.test", "[slow] quote")).status_code == 504
            if index % 2 == 0:
                # the clean-up an hour later finds the dead request and counts it on its day
                abandoned_messages_release(now=at + timedelta(hours=1))
    finally:
        openai_agent.MAX_RETRIES = retries
    return Seeded(acme=acme, globex=globex, support=support, sales=sales, helpdesk=helpdesk, days=seeded_days)


def message_stats_answered(**answered: Any) -> None:
    """Count one answered message as the record phase's first statement does (api/flow/writes.py runs this upsert
    as one of its steps)."""
    with connection.cursor() as cursor:
        cursor.execute(*message_stats_answered_statement(**answered))
