"""The read API's flat cost: a page of a conversation's messages at position 10 against one near position
1,000,000 (README "The read API", bench/RESULTS.md "Read API").

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/channels_bench_read .venv/bin/python -m bench.read_api

PostgreSQL only. It migrates the database it is given (create it first: `createdb ...`), seeds one
conversation with 1,000,000 messages (500,000 questions and their replies) by one INSERT ... SELECT over
generate_series (about 10-20 s; skipped when the conversation is there already), then times GET
/api/v1/conversations/{id}/messages through Django's test client (the whole middleware and view stack) with
the cursor at position 10 and at position 999,960, alternating, and prints a JSON line: median and p95 per
position and their ratio, and each query's plan (rows read, buffers).
"""

import argparse
import json
import os
import statistics
import time
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")  # no request lines in the timing loop's output

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from config.pagination import cursor_encode  # noqa: E402

MESSAGES = 1_000_000
BENCH_SLUG = "bench-read-api"


def _setup() -> tuple[str, str]:
    """The bench workspace's key and its one long conversation (created once)."""
    from channels_app.models import AIAgent, Channel, Workspace
    from channels_app.services import apikey_create
    from contacts.services import contact_create
    from conversations.models import Conversation

    workspace = Workspace.objects.filter(slug=BENCH_SLUG).first()
    if workspace is None:
        workspace = Workspace.objects.create(name="Bench read API", slug=BENCH_SLUG, rate_limit_per_minute=0)
        agent = AIAgent.objects.create(workspace=workspace, name="Bench agent", provider="builtin")
        channel = Channel.objects.create(
            workspace=workspace, name="Bench", type=Channel.Type.API, is_active=True, agent=agent
        )
        contact = contact_create(workspace_id=workspace.pk, identifier="bench@example.com", name="Bench")
        Conversation.objects.create(
            workspace=workspace, channel=channel, contact=contact, agent=channel.agent, last_seq=MESSAGES // 2
        )
    conversation = Conversation.objects.get(workspace=workspace)
    if not conversation.messages.exists():
        started = time.monotonic()
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO conversations_message (id, conversation_id, seq, part, direction, type, content, metadata,
                    status, credits_reserved, credits, input_tokens, output_tokens, error_code, media_mime_type,
                    created_at)
                SELECT 'msg_bench_' || lpad(g::text, 7, '0') || '_' || p, %s, g, p,
                    CASE p WHEN 0 THEN 'INBOUND' ELSE 'OUTBOUND' END, 'TEXT',
                    jsonb_build_object('text', jsonb_build_object('body', 'message ' || g || '.' || p)), '{}'::jsonb,
                    CASE p WHEN 0 THEN 'ANSWERED' ELSE 'SENT' END, 0, 0, 0, 0, '', '',
                    now() - make_interval(secs => %s - g)
                FROM generate_series(1, %s) AS g, (VALUES (0), (1)) AS parts(p)
                """,
                [conversation.pk, MESSAGES // 2, MESSAGES // 2],
            )
            cursor.execute("ANALYZE conversations_message")
        print(json.dumps({"seeded": MESSAGES, "seconds": round(time.monotonic() - started, 1)}))
    key = apikey_create(workspace=workspace, name="bench")[1]
    return key, conversation.pk


def _plan(conversation_id: str, seq: int) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT id FROM conversations_message WHERE conversation_id = %s "
            "AND seq >= %s AND (seq > %s OR part > 0) ORDER BY seq, part LIMIT 21",
            [conversation_id, seq, seq],
        )
        plan = cursor.fetchone()[0][0]
    node = plan["Plan"]
    while node.get("Plans") and "Index" not in node.get("Node Type", ""):
        node = node["Plans"][0]
    return {
        "node": node.get("Node Type"),
        "index": node.get("Index Name"),
        "sharedHitBlocks": plan["Plan"].get("Shared Hit Blocks", 0) + plan["Plan"].get("Shared Read Blocks", 0),
        "ms": plan["Execution Time"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300, help="timed requests per position")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    key, conversation_id = _setup()
    client = Client()
    url = f"/api/v1/conversations/{conversation_id}/messages"
    # position 10 = after (seq 5, part 1); near 1,000,000 = after (seq 499,980, part 1)
    cursors = {"10": cursor_encode([5, 1, ""]), "999960": cursor_encode([MESSAGES // 2 - 20, 1, ""])}
    for cursor in cursors.values():  # warm: the index pages in shared buffers, the key's last_used_at
        for _ in range(20):
            assert client.get(url, {"cursor": cursor}, HTTP_X_API_KEY=key).status_code == 200
    samples: dict[str, list[float]] = {name: [] for name in cursors}
    for _ in range(args.requests):
        for name, cursor in cursors.items():
            started = time.perf_counter()
            response = client.get(url, {"cursor": cursor}, HTTP_X_API_KEY=key)
            samples[name].append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200 and len(response.json()["data"]) == 20
    result: dict[str, Any] = {
        name: {
            "median_ms": round(statistics.median(values), 3),
            "p95_ms": round(statistics.quantiles(values, n=20)[-1], 3),
        }
        for name, values in samples.items()
    }
    result["ratio_median"] = round(result["999960"]["median_ms"] / result["10"]["median_ms"], 3)
    result["plans"] = {"10": _plan(conversation_id, 5), "999960": _plan(conversation_id, MESSAGES // 2 - 20)}
    with connection.cursor() as plan_cursor:  # for contrast: what OFFSET paging would cost at the same depth
        plan_cursor.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) SELECT id FROM conversations_message WHERE conversation_id = %s "
            "ORDER BY seq, part LIMIT 20 OFFSET 999960",
            [conversation_id],
        )
        result["offset_999960_query_ms"] = round(plan_cursor.fetchone()[0][0]["Execution Time"], 1)
    result["requests"] = args.requests
    print(json.dumps(result))


if __name__ == "__main__":
    main()
