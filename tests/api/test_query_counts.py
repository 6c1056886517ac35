"""Statements per message, pinned (benchmark scenario 4, bench/RESULTS.md): a new contact, an existing one,
with and without an idempotency key, and an idempotent replay, for the built-in agent and for an
OpenAI-compatible agent (pytest-httpserver standing in for the LLM). The other tests that count a message's
statements take these numbers from here.

The goals: at most 8, 7 and 2, a key at most 2 more. Each phase writes through one statement of
data-modifying CTEs (api/flow/writes.py):
- new contact, 6: the key; accept 3 (channel and its agent and team; contact + active conversation lookup;
  contact, conversation, message and credit reservation); think 0 (a conversation's first message has no
  history to read); record 2 (conversation stamp, replies, daily rollup and the channel's webhook; then the
  settlement, its ledger entry and the message answered with its 200 body);
- existing contact, 7: the same, the position taken in the accept statement, and the history query;
- with an idempotency key, 2 more: its claim (accept) and its hold (record); its attachment to the message and
  its stored response ride on the accept and the last record statement;
- replay, 2: the key, and the claim that reads the record;
- an agent with documents, 2 more: the search of its passages (think phase, knowledge/retrieval.py: the
  question's words' weights, then the passages; only the first when no word of the message is in them); an
  agent without any costs nothing for them (its snapshot says it has no passages).
A change that lowers a count should lower its pin here.

Counted like `assert_statements` everywhere: BEGIN/COMMIT/SAVEPOINT/RELEASE are not statements of work.
"""

import json

import pytest
from pytest_httpserver import HTTPServer

from tests.conftest import KNOWLEDGE_STATEMENTS, SEED_TEXT, Api
from tests.factories import AIAgentFactory, ChannelFactory, document_for

NEW_CONTACT = 6
EXISTING_CONTACT = 7
WITH_KEY = 2  # more, with an idempotency key
IDEMPOTENT_REPLAY = 2
KNOWLEDGE = KNOWLEDGE_STATEMENTS  # more, for an agent with documents


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


@pytest.fixture(params=["builtin", "openai", "builtin-with-documents"])
def agent_api(request, client, workspace, api_key) -> Api:
    """A channel of the agent kind; `api.extra` is the statements its knowledge adds to a message."""
    if request.param == "openai":
        httpserver: HTTPServer = request.getfixturevalue("httpserver")
        httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_json(_completion())
        agent = AIAgentFactory.create(
            workspace=workspace,
            provider="openai",
            base_url=httpserver.url_for("/v1"),
            model="test-model",
        )
    else:
        agent = AIAgentFactory.create(workspace=workspace, provider="builtin")
        if request.param == "builtin-with-documents":
            # words of both messages the tests send (the spec's greeting, "And to Porto?"): the full search
            text = "Orders ship within 2 business days, to Porto in 3. We are glad to help."
            document_for(agent, title="How long does shipping take?", text=text)
    api = Api(client, ChannelFactory(workspace=workspace, agent=agent), api_key)
    api.extra = KNOWLEDGE if request.param == "builtin-with-documents" else 0
    # the key's last-used stamp (at most one write a minute) is warm
    assert api.post({**SEED_TEXT, "contactIdentifier": "warm-up@example.com"}).status_code == 200
    return api


def test_a_message_of_a_new_contact(agent_api, assert_statements):
    with assert_statements(NEW_CONTACT + agent_api.extra):
        assert agent_api.post({**SEED_TEXT, "contactIdentifier": "new@example.com"}).status_code == 200


def test_a_message_of_an_existing_contact(agent_api, assert_statements):
    agent_api.post({**SEED_TEXT, "contactIdentifier": "known@example.com"})
    body = {**SEED_TEXT, "contactIdentifier": "known@example.com", "content": {"text": {"body": "And to Porto?"}}}
    with assert_statements(EXISTING_CONTACT + agent_api.extra):
        assert agent_api.post(body).status_code == 200


def test_an_idempotent_replay(agent_api, assert_statements):
    first = agent_api.post(idempotency_key="replay-1")
    with assert_statements(IDEMPOTENT_REPLAY):
        replay = agent_api.post(idempotency_key="replay-1")
    assert replay.status_code == 200
    assert replay["Idempotent-Replayed"] == "true"
    assert json.loads(replay.content) == json.loads(first.content)


def test_a_message_with_an_idempotency_key(agent_api, assert_statements):
    with assert_statements(NEW_CONTACT + WITH_KEY + agent_api.extra):
        assert (
            agent_api.post({**SEED_TEXT, "contactIdentifier": "keyed@example.com"}, idempotency_key="k-1").status_code
            == 200
        )
    body = {**SEED_TEXT, "contactIdentifier": "keyed@example.com", "content": {"text": {"body": "And to Porto?"}}}
    with assert_statements(EXISTING_CONTACT + WITH_KEY + agent_api.extra):
        assert agent_api.post(body, idempotency_key="k-2").status_code == 200
