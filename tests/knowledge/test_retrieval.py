"""Which passages an agent is given (knowledge/retrieval.py): any of the question's words, rare words first,
exact codes before everything, within the agent's limits; and end to end, the LLM's request carries them
and the 200 body's `sources` names their documents (README "The agent's knowledge")."""

import json
from dataclasses import replace

import pytest

from channels_app.models import AIAgent
from conversations.agents.base import HistoryItem
from conversations.selectors import agent_config
from knowledge.retrieval import knowledge_select, passages_rank, query_text
from knowledge.services import document_delete
from tests.conftest import SEED_TEXT, Api
from tests.factories import AIAgentFactory, ChannelFactory, document_for
from tests.llm_stand_in import StandIn, start

FAQ = {
    "returns": ("Returns", "You can return any item within 30 days of delivery for a full refund."),
    "shipping": ("Shipping", "Orders ship within 2 business days. Delivery to Portugal takes 5 days."),
    "warranty": ("Warranty", "Every product has a two-year warranty against manufacturing defects."),
    "payment": ("Payment methods", "We accept Visa, Mastercard and PayPal. Orders are paid when placed."),
    "order-status": ("Order A-77812", "Order A-77812 was shipped on Monday by courier."),
}


@pytest.fixture
def agent(db, workspace) -> AIAgent:
    agent = AIAgentFactory.create(workspace=workspace)
    for key, (title, text) in FAQ.items():
        document_for(agent, key=key, title=title, text=text)
    return AIAgent.objects.get(pk=agent.pk)


def ranked(agent: AIAgent, query: str, limit: int = 5) -> list[str]:
    return [
        item.passage.document_id for item in passages_rank(agent=agent_config(agent=agent), query=query, limit=limit)
    ]


def test_a_question_needs_only_some_of_its_words_in_the_answer(agent):
    # "how" / "do" / "I" are stop words; "return" and "items" match (stems), "money" matches nothing
    assert ranked(agent, "How do I return items and get my money back?")[0] == "returns"
    assert ranked(agent, "what cards do you take? visa?")[0] == "payment"
    assert ranked(agent, "Is there a guarantee for defects?")[0] == "warranty"
    assert ranked(agent, "quantum chromodynamics") == []
    assert ranked(agent, "!!! ???") == []


def test_rare_words_weigh_more_than_common_ones(agent):
    # "orders" is in two documents, "portugal" in one: the one that has the rare word wins
    assert ranked(agent, "orders to Portugal")[0] == "shipping"


def test_an_exact_code_wins_over_words(agent):
    document_for(agent, key="delays", title="Delays", text="Orders are shipped late when the courier is on strike.")
    assert ranked(AIAgent.objects.get(pk=agent.pk), "where is my order a-77812? was it shipped late?")[0] == (
        "order-status"
    )
    assert ranked(agent, "A-77812")[0] == "order-status"
    assert ranked(agent, "77812")[0] == "order-status"


def test_the_agents_language_decides_the_stemming(agent):
    assert ranked(agent, "returning")[0] == "returns"  # english: returning -> return
    agent.knowledge_language = "simple"
    agent.save()  # the passages are indexed again, in the new language
    agent = AIAgent.objects.get(pk=agent.pk)
    assert ranked(agent, "returning") == []
    assert ranked(agent, "return")[0] == "returns"


def test_the_passages_given_keep_within_the_agents_limits(agent):
    config = agent_config(agent=agent)
    history = [HistoryItem(role="user", type="TEXT", content={"text": {"body": "orders shipped refund warranty"}})]
    assert len(knowledge_select(agent=config, history=history)) == 4
    assert len(knowledge_select(agent=replace(config, knowledge_max_passages=2), history=history)) == 2
    tight = knowledge_select(agent=replace(config, knowledge_max_chars=80), history=history)
    assert sum(len(passage.text) for passage in tight) <= 80 and len(tight) >= 1
    assert knowledge_select(agent=replace(config, knowledge_max_passages=0), history=history) == ()


def test_the_query_is_the_contacts_latest_messages():
    def item(role: str, body: str) -> HistoryItem:
        return HistoryItem(role=role, type="TEXT", content={"text": {"body": body}})

    history = [
        item("user", "old"),
        item("user", "about shipping"),
        item("assistant", "Sure."),
        item("user", "Portugal?"),
    ]
    assert query_text(history) == "Portugal?\nabout shipping"
    caption = HistoryItem(
        role="user", type="IMAGE", content={"image": {"url": "https://x/y.png", "caption": "receipt"}}
    )
    assert query_text([caption]) == "receipt"


# --- end to end: the OpenAI-compatible agent, through the messages endpoint ----------------------------------


@pytest.fixture
def stand_in():
    stand_in = StandIn()
    server = start(stand_in)
    yield stand_in
    server.shutdown()


@pytest.fixture
def llm_api(client, workspace, api_key, stand_in) -> Api:
    agent = AIAgentFactory.create(
        workspace=workspace, provider="openai", base_url=stand_in.url, model="m", instructions="Be brief."
    )
    for key, (title, text) in FAQ.items():
        document_for(agent, key=key, title=title, text=text)
    return Api(client, ChannelFactory.create(workspace=workspace, agent=agent), api_key)


def ask(api: Api, question: str) -> dict:
    response = api.post({**SEED_TEXT, "content": {"text": {"body": question}}})
    assert response.status_code == 200, response.content
    return response.json()


def test_the_llm_is_given_the_passage_only_one_document_holds_and_sources_names_it(llm_api, stand_in):
    stand_in.script("Two years.")

    body = ask(llm_api, "How long is the warranty on manufacturing defects?")

    assert body["sources"][0] == {"documentId": "warranty", "title": "Warranty", "url": None}
    messages = stand_in.requests[0]["messages"]
    assert messages[0] == {"role": "system", "content": "Be brief."}
    knowledge = messages[1]
    assert knowledge["role"] == "system"
    assert "[Warranty]\nEvery product has a two-year warranty against manufacturing defects." in knowledge["content"]
    assert messages[-1]["role"] == "user"
    # polling and a replay carry the same sources: the stored body
    stored = llm_api.client.get(f"/api/v1/messages/{body['messageId']}", HTTP_X_API_KEY=llm_api.key).json()
    assert stored["result"]["sources"] == body["sources"]


def test_nothing_found_sends_no_knowledge_message_and_empty_sources(llm_api, stand_in):
    stand_in.script("Hello.")
    body = ask(llm_api, "quantum chromodynamics")
    assert body["sources"] == []
    system = [m["content"] for m in stand_in.requests[0]["messages"] if m["role"] == "system"]
    assert system and not any(text.startswith("Passages from the business's own documents") for text in system)


def test_a_deleted_document_is_not_given_to_the_next_message(llm_api, stand_in):
    stand_in.script("One.", "Two.")
    assert ask(llm_api, "warranty defects")["sources"][0]["documentId"] == "warranty"
    document_delete(agent=llm_api.channel.agent, key="warranty")
    body = ask(llm_api, "warranty defects")
    assert all(source["documentId"] != "warranty" for source in body["sources"])
    assert "two-year" not in json.dumps(stand_in.requests[1]["messages"])
