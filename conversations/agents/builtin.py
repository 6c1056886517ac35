"""The built-in agent: deterministic and offline.

It ranks the agent's knowledge entries against the contact's message with BM25 (question and answer
both count, the question twice as much), answers with the best entry's answer, greets a greeting, and
otherwise says the agent's fallback text. No network, no randomness: the same input gives the same reply.
"""

import math
import re
import unicodedata
from collections import Counter

from conversations.agents.base import AgentConfig, AgentReply, HistoryItem, split_reply

_WORD = re.compile(r"[a-z0-9]+")
# Words that carry no topic; dropping them keeps "what is the price" from matching every "what is ..." entry.
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
_BM25_K1 = 1.5
_BM25_B = 0.75
# Below this score the best entry shares too little with the message to be an answer: say the fallback.
_MIN_SCORE = 0.5


def _tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return [_stem(word) for word in _WORD.findall(text) if word not in _STOPWORDS]


def _stem(word: str) -> str:
    """A tiny suffix stripper: enough for "refunds"/"refund", "shipping"/"ship"; not a real stemmer."""
    for suffix in ("ing", "ies", "es", "s", "ed"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


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


def rank_knowledge(query: str, knowledge: tuple[tuple[str, str], ...]) -> list[tuple[float, int]]:
    """BM25 scores of each (question, answer) entry for `query`, best first, as (score, index)."""
    query_terms = set(_tokens(query))
    if not query_terms or not knowledge:
        return []
    documents = [Counter(_tokens(question) * 2 + _tokens(answer)) for question, answer in knowledge]
    average_length = sum(sum(doc.values()) for doc in documents) / len(documents) or 1.0
    document_frequency = Counter(term for doc in documents for term in doc)
    count = len(documents)
    scores = []
    for index, doc in enumerate(documents):
        length = sum(doc.values())
        score = 0.0
        for term in query_terms:
            frequency = doc.get(term, 0)
            if not frequency:
                continue
            idf = math.log(1 + (count - document_frequency[term] + 0.5) / (document_frequency[term] + 0.5))
            score += (
                idf
                * frequency
                * (_BM25_K1 + 1)
                / (frequency + _BM25_K1 * (1 - _BM25_B + _BM25_B * length / average_length))
            )
        if score > 0:
            scores.append((score, index))
    scores.sort(key=lambda pair: (-pair[0], pair[1]))
    return scores


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
    uses_knowledge = True  # the accept phase loads the agent's knowledge entries into AgentConfig.knowledge

    def reply(self, *, agent: AgentConfig, history: list[HistoryItem]) -> AgentReply:
        message = history[-1]
        if message.type == "TEXT":
            query = message.content.get("text", {}).get("body", "")
        else:
            query = message.content.get(message.type.lower(), {}).get("caption", "") or ""
        ranked = rank_knowledge(query, agent.knowledge)
        if ranked and ranked[0][0] >= _MIN_SCORE:
            answer = agent.knowledge[ranked[0][1]][1]
            if message.type != "TEXT":
                answer = f"{_describe_media(message)}\n\n{answer}"
        elif message.type != "TEXT":
            answer = _describe_media(message)
        elif _is_greeting(query) and agent.greeting_text:
            answer = agent.greeting_text
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
