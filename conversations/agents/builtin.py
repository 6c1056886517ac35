"""The built-in agent: deterministic and offline.

It greets a greeting, answers with the best passage of the agent's documents that the think phase found
for the message (`AgentConfig.knowledge`, knowledge/retrieval.py), and otherwise says the agent's fallback
text. No network, no randomness: the same input gives the same reply.
"""

import re
import unicodedata

from conversations.agents.base import AgentConfig, AgentReply, HistoryItem, split_reply

_WORD = re.compile(r"[a-z0-9]+")
# Words that carry no topic: a greeting followed only by these asks nothing.
_STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in is it its me my of on or our "
    "please so that the their them there this to up us was we what when where which who why will with you "
    "your yours hi hello hey".split()
)
_GREETINGS = frozenset(
    "hi hello hey hiya howdy greetings yo ola oi hallo bonjour hola ciao good morning afternoon evening there".split()
)
# What people add to a greeting without asking anything: "Hello, how can I help you?" (the spec's own
# example), "hi, how are you", "good morning everyone". A greeting followed only by these words is greeted.
_PLEASANTRIES = frozenset(
    "help assist today doing going everyone everybody all folks team friend friends nice meet again "
    "thanks thank dear sir madam".split()
)
_GREETING_MAX_WORDS = 8


def _is_greeting(text: str) -> bool:
    """A short message that starts with a greeting and asks nothing else: every other word is a greeting,
    a word without a topic (_STOPWORDS) or a pleasantry."""
    words = _WORD.findall(unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower())
    return (
        bool(words)
        and len(words) <= _GREETING_MAX_WORDS
        and words[0] in _GREETINGS
        and all(word in _GREETINGS or word in _STOPWORDS or word in _PLEASANTRIES for word in words)
    )


def _describe_media(item: HistoryItem) -> str:
    kind = item.type.lower()
    body = item.content.get(kind, {}) if isinstance(item.content, dict) else {}
    caption = (body.get("caption") or "").strip()
    filename = (body.get("filename") or "").strip()
    label = f"{kind} \u201c{filename}\u201d" if filename else kind
    if caption:
        return f"Thanks, I received your {label}: \u201c{caption}\u201d."
    return f"Thanks, I received your {label}."


class BuiltinAgent:
    """The backend settings.AGENT_BACKENDS names "builtin"."""

    label = "Built-in (offline)"

    def reply(self, *, agent: AgentConfig, history: list[HistoryItem]) -> AgentReply:
        message = history[-1]
        if message.type == "TEXT":
            query = message.content.get("text", {}).get("body", "")
        else:
            query = message.content.get(message.type.lower(), {}).get("caption", "") or ""
        if message.type == "TEXT" and _is_greeting(query) and agent.greeting_text:
            answer = agent.greeting_text
        elif agent.knowledge:
            answer = agent.knowledge[0].text
            if message.type != "TEXT":
                answer = f"{_describe_media(message)}\n\n{answer}"
        elif message.type != "TEXT":
            answer = _describe_media(message)
        else:
            answer = agent.fallback_text or "I'm sorry, I can't answer that."
        texts = split_reply(answer, threshold=agent.split_threshold_chars)
        # Token counts approximate a tokenizer (about four characters a token) so usage is never zero.
        input_chars = sum(len(str(item.content)) for item in history) + len(agent.instructions)
        return AgentReply(
            texts=texts,
            input_tokens=max(1, input_chars // 4),
            output_tokens=max(1, sum(len(text) for text in texts) // 4),
            raw_model="builtin",
        )
