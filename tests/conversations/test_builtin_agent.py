from dataclasses import replace

from conversations.agents.base import AgentConfig, HistoryItem, KnowledgePassage, split_reply
from conversations.agents.builtin import BuiltinAgent
from tests.agents import agent_config


def passage(text: str, title: str = "FAQ") -> KnowledgePassage:
    return KnowledgePassage(document_id=title.lower(), title=title, url=None, heading="", text=text)


# The passages the think phase found for the message (knowledge/retrieval.py; tests/knowledge test the search).
AGENT = agent_config(
    greeting_text="Hello! How can I help?",
    fallback_text="Sorry, I don't know.",
    knowledge=(passage("Use the reset link.", "Passwords"), passage("Two days.", "Shipping")),
)
NOTHING_FOUND = replace(AGENT, knowledge=())


def text(body: str) -> list[HistoryItem]:
    return [HistoryItem(role="user", type="TEXT", content={"text": {"body": body}})]


def answer(agent: AgentConfig, history: list[HistoryItem]) -> list[str]:
    return BuiltinAgent().reply(agent=agent, history=history).texts


def test_answers_with_the_best_passage():
    assert answer(AGENT, text("I forgot my password, how can I reset it?")) == ["Use the reset link."]


def test_greets_and_falls_back():
    assert answer(AGENT, text("Hello!")) == ["Hello! How can I help?"]
    assert answer(AGENT, text("good morning")) == ["Hello! How can I help?"]
    # the spec's own example text, and greetings people write with a pleasantry: greeted, whatever was found
    for greeting in ("Hello, how can I help you?", "Hi, how are you?", "Good morning everyone!", "hey there"):
        assert answer(AGENT, text(greeting)) == ["Hello! How can I help?"], greeting
    # a greeting with a question about something is not only a greeting
    assert answer(NOTHING_FOUND, text("Hello, where is my parcel?")) == ["Sorry, I don't know."]
    assert answer(AGENT, text("Hi, how long does shipping take?")) == ["Use the reset link."]
    assert answer(NOTHING_FOUND, text("Tell me about quantum chromodynamics")) == ["Sorry, I don't know."]


def test_media_is_acknowledged_by_type_and_caption():
    image = [
        HistoryItem(
            role="user", type="IMAGE", content={"image": {"url": "https://example.com/a.jpg", "caption": "my receipt"}}
        )
    ]
    document = [
        HistoryItem(
            role="user",
            type="DOCUMENT",
            content={"document": {"url": "https://example.com/a.pdf", "filename": "a.pdf"}},
        )
    ]
    assert answer(NOTHING_FOUND, image) == ["Thanks, I received your image: \u201cmy receipt\u201d."]
    assert answer(NOTHING_FOUND, document) == ["Thanks, I received your document \u201ca.pdf\u201d."]


def test_usage_is_never_zero():
    reply = BuiltinAgent().reply(agent=AGENT, history=text("hi"))
    assert reply.input_tokens >= 1 and reply.output_tokens >= 1


def test_split_reply_packs_paragraphs_under_the_threshold():
    paragraphs = ["a" * 40, "b" * 40, "c" * 40]
    assert split_reply("\n\n".join(paragraphs), threshold=90) == ["a" * 40 + "\n\n" + "b" * 40, "c" * 40]
    assert split_reply("short", threshold=90) == ["short"]
    assert split_reply("x" * 200, threshold=90) == ["x" * 200]  # one long paragraph is not cut
    assert split_reply("   ", threshold=90) == []
