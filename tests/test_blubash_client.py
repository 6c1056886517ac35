"""A client written against Blubash's "Canal API" reads our responses unchanged (README "Example").

Blubash's page shows one full response; public client code written against it reads exactly
`conversation.aiAgentId`, `conversation.aiAgentName`, `aiMessages[].sender_name`, `content.text.body` and
`usage.credits`. Here that client logic runs against a live server (pytest-django's `live_server`, real HTTP
with `requests`), and every field of Blubash's example is in our body with the same JSON type.
"""

import pytest
import requests

from billing.credits import credits_grant
from channels_app.models import Team
from tests.factories import AIAgentFactory, ChannelFactory, WorkspaceFactory, api_key_for, document_for

pytestmark = pytest.mark.django_db(transaction=True)

# Blubash's example response, verbatim from its page.
BLUBASH_EXAMPLE = {
    "success": True,
    "contactId": "cmg5gdkb60000sb75h4yu6mam",
    "conversationId": "cmg6etn5u000dsbx2htkjot8r",
    "messageId": "cmg6zqegm0001sbw9ip35juiq",
    "conversation": {
        "status": "ACTIVE",
        "assignedToHuman": False,
        "aiAgentId": "cmdi03x0z0003sbz6ubwtdrml",
        "aiAgentName": "Aurora",
        "teamId": "0fb043a2-75f7-42d7-b542-1ffcc1f75ccf",
        "teamName": "Suporte Técnico",
    },
    "aiMessages": [
        {
            "content": {"text": {"body": "Olá! Como posso ajudar você hoje?"}, "type": "text"},
            "type": "TEXT",
            "sender_type": "AI",
            "sender_name": "Aurora",
            "channel_message_id": None,
        }
    ],
    "usage": {"credits": 1},
}


def blubash_client(base_url: str, channel_id: str, api_key: str, text: str) -> dict:
    """The integration logic of a client written for Blubash: send a text, show who answered and what."""
    response = requests.post(
        f"{base_url}/api/v1/channels/{channel_id}/messages",
        json={"content": {"text": {"body": text}}, "type": "TEXT", "contactIdentifier": "user@example.com"},
        headers={"X-API-Key": api_key},
        timeout=30,
    )
    if not response.ok:
        raise RuntimeError(f"HTTP {response.status_code}: {response.reason}")
    result = response.json()
    if not result["success"] or result["conversation"]["assignedToHuman"]:
        raise RuntimeError("not answered by the AI")
    lines = [
        f"{message['sender_name']}: {message['content']['text']['body']}"
        for message in result["aiMessages"]
        if message["sender_type"] == "AI" and message["type"] == "TEXT" and message["content"]["type"] == "text"
    ]
    return {
        "agent": result["conversation"]["aiAgentName"],
        "agentId": result["conversation"]["aiAgentId"],
        "team": result["conversation"]["teamName"],
        "lines": lines,
        "credits": result["usage"]["credits"],
        "raw": result,
    }


def _shape(value, path="$"):
    """{path: JSON type} of every field, list items as [0]; null counts as the field's own type unknown."""
    kinds = {}
    if isinstance(value, dict):
        for key, item in value.items():
            kinds[f"{path}.{key}"] = type(item).__name__
            kinds.update(_shape(item, f"{path}.{key}"))
    elif isinstance(value, list):
        for item in value[:1]:
            kinds.update(_shape(item, f"{path}[0]"))
    return kinds


def test_a_client_written_for_blubash_reads_our_response(live_server):
    # given: an agent called Aurora on a channel of the team "Suporte Técnico"
    workspace = WorkspaceFactory()
    credits_grant(workspace=workspace, amount=10, note="live test")
    team = Team.objects.create(workspace=workspace, name="Suporte Técnico")
    channel = ChannelFactory(workspace=workspace, team=team, agent=AIAgentFactory(workspace=workspace, name="Aurora"))
    document_for(channel.agent, title="Como rastrear meu pedido?", text="Pelo link do e-mail.")
    key = api_key_for(workspace)[1]

    # when: the Blubash client sends the spec's example text
    shown = blubash_client(live_server.url, channel.pk, key, "Hello, how can I help you?")

    # then: it shows what our agent answered, who answered and what it cost
    assert shown["agent"] == "Aurora" and shown["agentId"] == channel.agent.pk
    assert shown["team"] == "Suporte Técnico"
    assert shown["lines"] == ["Aurora: Hello! How can I help you today?"]
    assert shown["credits"] == 1
    # and every field of Blubash's example is in our body, with the same JSON type
    ours, theirs = _shape(shown["raw"]), _shape(BLUBASH_EXAMPLE)
    assert {path: ours.get(path) for path in theirs} == theirs
