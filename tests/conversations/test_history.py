"""The agent's memory: `history_build` and the history window it reads.

The window must cost the same at the 10th message and at the 10,000th: one query on the
(conversation, seq, part) unique index, read backwards, stopping after a bounded number of rows.
"""

import os
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from contacts.services import contact_create
from conversations.models import Conversation, Message
from conversations.selectors import history_window_sql
from conversations.services import TurnNotReady, history_build, text_chars
from tests.factories import ChannelFactory

LONG = 2500  # turns: 5,000 stored messages


def body(text: str) -> dict:
    return {"text": {"body": text}}


def conversation_with(turns: int, *, identifier: str = "user@example.com") -> tuple[Conversation, Message]:
    """A conversation of `turns` answered questions (question n: "q0000n", answer n: "a0000n", 6 characters
    each), created with bulk_create, and its next inbound message ("new message", 11 characters), pending."""
    channel = ChannelFactory.create()
    contact = contact_create(workspace_id=channel.workspace_id, identifier=identifier, name="")
    conversation = Conversation.objects.create(
        workspace=channel.workspace,
        channel=channel,
        contact=contact,
        agent=channel.agent,
        last_seq=turns + 1,
    )
    rows = []
    for seq in range(1, turns + 1):
        rows.append(
            Message(
                conversation=conversation,
                seq=seq,
                part=0,
                direction="INBOUND",
                type="TEXT",
                content=body(f"q{seq:05d}"),
                status="ANSWERED",
            )
        )
        rows.append(
            Message(
                conversation=conversation,
                seq=seq,
                part=1,
                direction="OUTBOUND",
                type="TEXT",
                content=body(f"a{seq:05d}"),
                status="SENT",
            )
        )
    Message.objects.bulk_create(rows, batch_size=2000)
    message = Message.objects.create(
        conversation=conversation,
        seq=turns + 1,
        part=0,
        direction="INBOUND",
        type="TEXT",
        content=body("new message"),
        status="PENDING",
        lease_until=timezone.now() + timedelta(minutes=2),
    )
    return conversation, message


def seen(message: Message, *, max_messages: int = 20, max_chars: int = 12000) -> list[tuple[str, str]]:
    items = history_build(message=message, max_messages=max_messages, max_chars=max_chars, now=timezone.now())
    return [(item.role, item.content["text"]["body"]) for item in items]


def test_text_chars_counts_the_strings_not_the_json():
    assert text_chars(body("hello")) == 5
    assert text_chars({"document": {"url": "https://x.example/a.pdf", "filename": "a.pdf", "caption": "Q3"}}) == 30


def test_history_is_the_conversation_oldest_first_then_the_new_message(db):
    _, message = conversation_with(2)

    assert seen(message) == [
        ("user", "q00001"),
        ("assistant", "a00001"),
        ("user", "q00002"),
        ("assistant", "a00002"),
        ("user", "new message"),
    ]


@pytest.mark.parametrize(
    ("max_messages", "expected"),
    [
        (5, ["q00009", "a00009", "q00010", "a00010", "new message"]),
        (4, ["q00010", "a00010", "new message"]),  # a00009 without its question is left out too
        (3, ["q00010", "a00010", "new message"]),
        (1, ["new message"]),
        (0, ["new message"]),  # the new message is always sent
    ],
)
def test_history_holds_at_most_max_messages_newest_kept(db, max_messages, expected):
    _, message = conversation_with(10)

    texts = [text for _, text in seen(message, max_messages=max_messages)]

    assert texts == expected
    assert len(texts) <= max(max_messages, 1)


@pytest.mark.parametrize(
    ("max_chars", "expected"),
    [
        (11 + 4 * 6, ["q00009", "a00009", "q00010", "a00010", "new message"]),  # exactly four earlier fit
        (11 + 4 * 6 - 1, ["q00010", "a00010", "new message"]),  # three fit; the oldest is an answer: left out
        (11 + 2 * 6, ["q00010", "a00010", "new message"]),
        (11 + 6 - 1, ["new message"]),
        (5, ["new message"]),  # over the budget alone, and still sent
    ],
)
def test_history_holds_at_most_max_chars_oldest_dropped_first(db, max_chars, expected):
    _, message = conversation_with(10)

    texts = [text for _, text in seen(message, max_chars=max_chars)]

    assert texts == expected
    assert len(texts) == 1 or sum(len(text) for text in texts) <= max_chars


def test_history_starts_with_the_contacts_message_and_alternates(db):
    _, message = conversation_with(10)

    for max_messages in range(1, 12):
        roles = [role for role, _ in seen(message, max_messages=max_messages)]
        assert roles[0] == "user" and roles[-1] == "user"
        assert all(a != b for a, b in zip(roles, roles[1:], strict=False)), roles


def test_failed_and_abandoned_messages_are_left_out(db):
    # given: a question the agent failed on, and one whose request died (its lease ran out)
    conversation, message = conversation_with(1)
    Message.objects.filter(pk=message.pk).update(seq=4)
    message.refresh_from_db()
    Message.objects.create(
        conversation=conversation,
        seq=2,
        direction="INBOUND",
        type="TEXT",
        content=body("failed one"),
        status="FAILED",
        error_code="agent_unavailable",
    )
    Message.objects.create(
        conversation=conversation,
        seq=3,
        direction="INBOUND",
        type="TEXT",
        content=body("abandoned"),
        status="PENDING",
        lease_until=timezone.now() - timedelta(seconds=1),
    )

    assert seen(message) == [("user", "q00001"), ("assistant", "a00001"), ("user", "new message")]


def test_an_earlier_message_still_being_answered_holds_the_turn(db):
    conversation, message = conversation_with(1)
    Message.objects.filter(pk=message.pk).update(seq=3)
    message.refresh_from_db()
    Message.objects.create(
        conversation=conversation,
        seq=2,
        direction="INBOUND",
        type="TEXT",
        content=body("in flight"),
        status="PENDING",
        lease_until=timezone.now() + timedelta(seconds=30),
    )

    with pytest.raises(TurnNotReady):
        seen(message)
    with pytest.raises(TurnNotReady):  # even for an agent that sees no history at all
        seen(message, max_messages=0)


def test_history_is_one_query_whatever_the_conversations_length(db):
    # given
    _, short_message = conversation_with(3, identifier="short@example.com")
    _, long_message = conversation_with(LONG, identifier="long@example.com")

    # when
    with CaptureQueriesContext(connection) as short:
        short_seen = seen(short_message)
    with CaptureQueriesContext(connection) as long:
        long_seen = seen(long_message)

    # then: the same single statement, with a LIMIT, for 7 rows and for 5,001
    assert len(short.captured_queries) == len(long.captured_queries) == 1
    assert "LIMIT 21" in long.captured_queries[0]["sql"]
    assert len(short_seen) == 7
    assert len(long_seen) == 19  # 20 allowed; the oldest, an answer without its question, left out
    assert long_seen[-3:] == [("user", f"q{LONG:05d}"), ("assistant", f"a{LONG:05d}"), ("user", "new message")]


@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
    reason="needs PostgreSQL (set DATABASE_URL=postgres://...): the plan checked here is PostgreSQL's; "
    "SQLite's planner and EXPLAIN output are different things",
)
def test_history_query_reads_the_position_index_backwards(db):
    # given: a long conversation among others, with fresh statistics
    conversation_with(50, identifier="other@example.com")
    conversation, message = conversation_with(LONG)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Message._meta.db_table}")

    # when
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + history_window_sql()[0], [conversation.pk, message.seq, 21])
        plan = "\n".join(row[0] for row in cursor.fetchall())

    # then: a backward scan of the unique index under the LIMIT; no scan of the message table, no sort. The
    # left-joined media assets are not asserted: the planner's way to the empty asset table differs between
    # versions (PostgreSQL 18 scans it, a few bytes), and it has no bearing on how the window is read.
    assert plan.startswith("Limit"), plan
    assert "Index Scan Backward using message_unique_position" in plan, plan
    assert f"Seq Scan on {Message._meta.db_table}" not in plan and "Sort" not in plan, plan
