"""The operators' dashboard and message list over 1,000,000 messages (PostgreSQL).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python -m bench.dashboard [--keep-db]

Creates its own database (`channels_bench_dashboard`, dropped at the end unless --keep-db; --reuse skips the
seeding of a kept one), migrates it, and seeds with generate_series SQL, not the ORM: 20 workspaces, 50
channels, 100,000 contacts and conversations (90 % open), 1,000,000 messages over the last 90 days
(500,000 from contacts, 5 % of them failed across the error codes, 500,000 replies) and the daily rollup
those messages make (backoffice_messageday, as the record and failure paths would have written it).
Then it times, in-process through Django's test client (the whole middleware and admin stack, no HTTP
server), the admin index with its dashboard and the message list with searches: the median of 15 page loads
after 3 warm-ups, and each query's time from Django's query log. Writes bench/results/dashboard.json.
Loopback only; nothing else is touched.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "channels_bench_dashboard"
WORKSPACES, CHANNELS, CONTACTS = 20, 50, 100_000
INBOUND_PER_CONVERSATION = 5  # 500,000 contact messages, each answered by one reply or failed
DAYS = 90
RUNS, WARM_UP = 15, 3
TARGET_MS = 300
FAILURE_CODES = [
    "media_unreachable",
    "media_type_mismatch",
    "agent_unavailable",
    "agent_timeout",
    "conversation_busy",
    "abandoned",
]


def database_url(base: str, name: str) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{name}"))


def admin_connection(base: str) -> psycopg.Connection:
    return psycopg.connect(database_url(base, "postgres"), autocommit=True)


def seed(cursor) -> None:
    """The bulk rows, in SQL. The small configuration tables come from the ORM (setup_config)."""
    from analytics.models import LATENCY_BUCKETS_MS, LATENCY_FIELDS

    total_inbound = CONTACTS * INBOUND_PER_CONVERSATION
    cursor.execute("SELECT setseed(0.16)")
    cursor.execute(
        "CREATE TEMP TABLE bench_channel AS SELECT (row_number() OVER (ORDER BY id)) - 1 AS n, id, workspace_id, "
        "agent_id FROM channels_app_channel"
    )
    cursor.execute(
        f"""
        INSERT INTO contacts_contact (id, workspace_id, identifier, name, created_at, updated_at)
        SELECT 'ct_' || lpad(k::text, 26, '0'), c.workspace_id, 'user' || k || '@mail' || (k % 97) || '.example',
               'User ' || k, now() - interval '{DAYS + 1} days', now() - interval '{DAYS + 1} days'
        FROM generate_series(0, {CONTACTS - 1}) k JOIN bench_channel c ON c.n = k % {CHANNELS}
        """
    )
    cursor.execute(
        f"""
        INSERT INTO conversations_conversation
            (id, workspace_id, channel_id, contact_id, agent_id, status, last_seq, created_at, last_message_at)
        SELECT 'cv_' || lpad(k::text, 26, '0'), c.workspace_id, c.id, 'ct_' || lpad(k::text, 26, '0'), c.agent_id,
               CASE WHEN k % 10 = 0 THEN 'CLOSED' ELSE 'OPEN' END, {INBOUND_PER_CONVERSATION},
               now() - interval '{DAYS} days', now() - (k % 1000) * interval '1 minute'
        FROM generate_series(0, {CONTACTS - 1}) k JOIN bench_channel c ON c.n = k % {CHANNELS}
        """
    )
    # The contact messages: number i = (seq - 1) * CONTACTS + k spreads them evenly over the days; every
    # 20th fails with one of the codes; an answer's agent latency is heavy-tailed (mostly under a second).
    cursor.execute(
        f"""
        CREATE TEMP TABLE bench_inbound AS
        SELECT i, k, s, c.workspace_id, c.id AS channel_id,
               now() - interval '{DAYS} days' + (i::float / {total_inbound}) * interval '{DAYS} days' AS created_at,
               (20 + 4000 * power(random(), 4))::int AS latency_ms,
               CASE WHEN i % 20 = 0 THEN (ARRAY{FAILURE_CODES!r})[1 + (i / 20) % {len(FAILURE_CODES)}] ELSE '' END
                   AS error_code,
               (ARRAY['Can I get a refund for order', 'How long does shipping take to', 'My parcel did not arrive',
                      'Do you ship to Porto', 'I want to change my address for'])[1 + i % 5] || ' ' || i AS body
        FROM generate_series(0, {total_inbound - 1}) i,
             LATERAL (SELECT i % {CONTACTS} AS k, i / {CONTACTS} + 1 AS s) position
             JOIN bench_channel c ON c.n = position.k % {CHANNELS}
        """
    )
    message_columns = (
        "id, conversation_id, seq, part, direction, type, content, status, reply_to_id, lease_until, "
        "credits_reserved, credits, input_tokens, output_tokens, error_code, media_asset_id, media_mime_type, "
        "media_size, created_at"
    )
    cursor.execute(
        f"""
        INSERT INTO conversations_message ({message_columns})
        SELECT 'msg_' || lpad(i::text, 24, '0') || '_0', 'cv_' || lpad(k::text, 26, '0'), s, 0, 'INBOUND', 'TEXT',
               jsonb_build_object('text', jsonb_build_object('body', body)),
               CASE WHEN error_code = '' THEN 'ANSWERED' ELSE 'FAILED' END, NULL::text, NULL::timestamptz, 0, 0, 0, 0,
               error_code, NULL::text, '', NULL::integer, created_at
        FROM bench_inbound
        UNION ALL
        SELECT 'msg_' || lpad(i::text, 24, '0') || '_1', 'cv_' || lpad(k::text, 26, '0'), s, 1, 'OUTBOUND', 'TEXT',
               jsonb_build_object('text', jsonb_build_object('body', 'Thanks for asking. ' || body)), 'SENT',
               'msg_' || lpad(i::text, 24, '0') || '_0', NULL, 0, 1, 40, 12, '', NULL, '', NULL,
               created_at + latency_ms * interval '1 millisecond'
        FROM bench_inbound WHERE error_code = ''
        UNION ALL  -- a second reply part for 25,000 answers: 1,000,000 messages in all
        SELECT 'msg_' || lpad(i::text, 24, '0') || '_2', 'cv_' || lpad(k::text, 26, '0'), s, 2, 'OUTBOUND', 'TEXT',
               jsonb_build_object('text', jsonb_build_object('body', 'Anything else?')), 'SENT',
               'msg_' || lpad(i::text, 24, '0') || '_0', NULL, 0, 0, 0, 0, '', NULL, '', NULL,
               created_at + latency_ms * interval '1 millisecond'
        FROM bench_inbound WHERE i % 20 = 1
        """
    )
    bounds = ", ".join(str(bound) for bound in LATENCY_BUCKETS_MS)
    buckets = ", ".join(
        f"SUM(CASE WHEN error_code = '' AND bucket = {index} THEN 1 ELSE 0 END)" for index in range(len(LATENCY_FIELDS))
    )
    cursor.execute(
        f"""
        INSERT INTO backoffice_messageday
            (workspace_id, day, channel_id, error_code, messages, replies, credits, input_tokens, output_tokens,
             agent_ms, {", ".join(LATENCY_FIELDS)})
        SELECT workspace_id, (created_at AT TIME ZONE 'UTC')::date, channel_id, error_code, COUNT(*),
               SUM(CASE WHEN error_code = '' THEN 1 + (i % 20 = 1)::int ELSE 0 END),
               SUM(CASE WHEN error_code = '' THEN 1 ELSE 0 END), SUM(CASE WHEN error_code = '' THEN 40 ELSE 0 END),
               SUM(CASE WHEN error_code = '' THEN 12 ELSE 0 END),
               SUM(CASE WHEN error_code = '' THEN latency_ms ELSE 0 END), {buckets}
        FROM (SELECT *, (SELECT count(*) FROM unnest(ARRAY[{bounds}]) bound WHERE bound < latency_ms) AS bucket
              FROM bench_inbound) counted
        GROUP BY 1, 2, 3, 4
        """
    )


def setup_config() -> None:
    from channels_app.models import AIAgent, Channel, Workspace

    workspaces = [Workspace.objects.create(name=f"Bench {n:02d}", slug=f"bench-{n:02d}") for n in range(WORKSPACES)]
    for n in range(CHANNELS):
        workspace = workspaces[n % WORKSPACES]
        agent = AIAgent.objects.create(workspace=workspace, name=f"Agent {n:02d}")
        Channel.objects.create(workspace=workspace, name=f"Channel {n:02d}", agent=agent)


def timed(client, url: str, params: dict | None = None) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(WARM_UP):
        assert client.get(url, params).status_code == 200
    pages, queries = [], []
    for _ in range(RUNS):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(url, params)
            pages.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
        queries.append([(q["sql"], float(q["time"]) * 1000) for q in captured.captured_queries])
    per_query = [
        {"sql": run[0][:140], "median_ms": round(statistics.median(ms for _, ms in run), 2)}
        for run in zip(*queries, strict=True)
    ]
    return {
        "url": url,
        "params": params or {},
        "page_median_ms": round(statistics.median(pages), 1),
        "page_p90_ms": round(sorted(pages)[int(len(pages) * 0.9) - 1], 1),
        "queries": len(per_query),
        "queries_ms": round(sum(item["median_ms"] for item in per_query), 1),
        "slowest_query": max(per_query, key=lambda item: item["median_ms"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-db", action="store_true", help="keep the database for another run")
    parser.add_argument("--reuse", action="store_true", help="time a kept database without seeding it again")
    args = parser.parse_args()
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith(("postgres://", "postgresql://")):
        sys.exit("bench.dashboard needs DATABASE_URL=postgres://... (a server it may create a database on).")
    url = database_url(base, DB_NAME)
    environment = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "config.settings.base"}
    if not args.reuse:
        with admin_connection(base) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
            admin.execute(f"CREATE DATABASE {DB_NAME}")
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=environment, check=True)
    os.environ.update({"DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "config.settings.base", "LOG_LEVEL": "WARNING"})
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client

    from channels_app.models import Workspace

    seconds = {}
    try:
        if not args.reuse:
            started = time.perf_counter()
            setup_config()
            with connection.cursor() as cursor:
                seed(cursor)
            seconds["seed"] = round(time.perf_counter() - started, 1)
            started = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE")
            seconds["vacuum_analyze"] = round(time.perf_counter() - started, 1)
            User.objects.create_superuser("bench", "bench@example.com", "bench-password")
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM conversations_message")
            messages = cursor.fetchone()[0]
            cursor.execute("SELECT count(*), min(day), max(day) FROM backoffice_messageday")
            rollup_rows, first_day, last_day = cursor.fetchone()
        client = Client()
        client.force_login(User.objects.get(username="bench"))
        workspace = Workspace.objects.order_by("name").first()
        assert workspace is not None, "the seed makes workspaces"
        results = [
            timed(client, "/admin/"),
            timed(client, "/admin/", {"workspace": workspace.pk}),
            timed(client, "/admin/", {"from": str(first_day), "to": str(last_day)}),
            timed(client, "/admin/conversations/message/"),
            timed(client, "/admin/conversations/message/", {"q": "parcel did not arrive 4242"}),
            timed(client, "/admin/conversations/message/", {"q": "user4242@mail"}),
            timed(client, "/admin/conversations/message/", {"outcome": "failed-timeout"}),
            timed(client, "/admin/conversations/message/", {"error_code": "agent_timeout"}),
        ]
    finally:
        connection.close()
        if not args.keep_db:
            with admin_connection(base) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    report = {
        "messages": messages,
        "rollup_rows": rollup_rows,
        "days": [str(first_day), str(last_day)],
        "seconds": seconds,
        "target_ms": TARGET_MS,
        "runs": RUNS,
        "results": results,
    }
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "dashboard.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{messages:,} messages, {rollup_rows:,} rollup rows ({first_day} to {last_day}); seeded in {seconds}")
    print("| page | median ms | p90 ms | queries | their time ms | slowest query ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for item in results:
        query = "&".join(f"{key}={value}" for key, value in item["params"].items())
        print(
            f"| `{item['url']}{'?' + query if query else ''}` | {item['page_median_ms']} | {item['page_p90_ms']} | "
            f"{item['queries']} | {item['queries_ms']} | {item['slowest_query']['median_ms']} |"
        )


if __name__ == "__main__":
    main()
