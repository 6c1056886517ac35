"""Statements per message, pinned (benchmark scenario 4, bench/RESULTS.md): a new contact, an existing one,
with and without an idempotency key, and an idempotent replay, for the built-in agent and for an
OpenAI-compatible agent (pytest-httpserver standing in for the LLM). The other tests that count a message's
statements take these numbers from here.

The issue's goals (PostgreSQL): at most 8, 7 and 2, a key at most 2 more. On PostgreSQL each phase writes
through one statement of data-modifying CTEs (api/flow/writes.py):
- new contact, 6: the key; accept 3 (channel and its agent and team; contact + active conversation lookup;
  contact, conversation, message and credit reservation); think 0 (a conversation's first message has no
  history to read); record 2 (conversation stamp, replies, daily rollup and the channel's webhook; then the
  settlement, its ledger entry and the message answered with its 200 body);
- existing contact, 7: the same, the position taken in the accept statement, and the history query;
- with an idempotency key, 2 more: its claim (accept) and its hold (record); its attachment to the message and
  its stored response ride on the accept and the last record statement;
- replay, 2: the key, and the claim that reads the record.
On SQLite (no data-modifying CTEs) the ORM writes one row per statement (api/flow/messaging.py): 14, 14, 2, +5.
A change that lowers a count should lower its pin here.

Counted like `assert_statements` everywhere: BEGIN/COMMIT/SAVEPOINT/RELEASE are not statements of work.
"""

import json

import pytest
from pytest_httpserver import HTTPServer

from tests.conftest import SEED_TEXT, Api
from tests.factories import AIAgentFactory, ChannelFactory, KnowledgeEntryFactory

NEW_CONTACT = 6
EXISTING_CONTACT = 7
WITH_KEY = 2  # more, with an idempotency key
IDEMPOTENT_REPLAY = 2


def _completion() -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "test-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Within 2 business days."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 30, "completion_tokens": 6, "total_tokens": 36},
    }


@pytest.fixture(params=["builtin", "openai"])
def agent_api(request, client, workspace, api_key) -> Api:
    if request.param == "openai":
        httpserver: HTTPServer = request.getfixturevalue("httpserver")
        httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_json(_completion())
        agent = AIAgentFactory(
            workspace=workspace,
            provider="openai",
            base_url=httpserver.url_for("/v1"),
            model="test-model",
        )
    else:
        agent = AIAgentFactory(workspace=workspace, provider="builtin")
        KnowledgeEntryFactory(
            agent=agent, question="How long does shipping take?", answer="Orders ship within 2 business days."
        )
    api = Api(client, ChannelFactory(workspace=workspace, agent=agent), api_key)
    # the key's last-used stamp (at most one write a minute) and the built-in agent's knowledge cache are warm
    assert api.post({**SEED_TEXT, "contactIdentifier": "warm-up@example.com"}).status_code == 200
    return api


def test_a_message_of_a_new_contact(agent_api, assert_statements):
    with assert_statements(NEW_CONTACT):
        assert agent_api.post({**SEED_TEXT, "contactIdentifier": "new@example.com"}).status_code == 200


def test_a_message_of_an_existing_contact(agent_api, assert_statements):
    agent_api.post({**SEED_TEXT, "contactIdentifier": "known@example.com"})
    body = {**SEED_TEXT, "contactIdentifier": "known@example.com", "content": {"text": {"body": "And to Porto?"}}}
    with assert_statements(EXISTING_CONTACT):
        assert agent_api.post(body).status_code == 200


def test_an_idempotent_replay(agent_api, assert_statements):
    first = agent_api.post(idempotency_key="replay-1")
    with assert_statements(IDEMPOTENT_REPLAY):
        replay = agent_api.post(idempotency_key="replay-1")
    assert replay.status_code == 200
    assert replay["Idempotent-Replayed"] == "true"
    assert json.loads(replay.content) == json.loads(first.content)


def test_a_message_with_an_idempotency_key(agent_api, assert_statements):
    with assert_statements(NEW_CONTACT + WITH_KEY):
        assert (
            agent_api.post({**SEED_TEXT, "contactIdentifier": "keyed@example.com"}, idempotency_key="k-1").status_code
            == 200
        )
    body = {**SEED_TEXT, "contactIdentifier": "keyed@example.com", "content": {"text": {"body": "And to Porto?"}}}
    with assert_statements(EXISTING_CONTACT + WITH_KEY):
        assert agent_api.post(body, idempotency_key="k-2").status_code == 200
