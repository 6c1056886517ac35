"""The benchmark's data, made through the apps' services and ORM (and bulk SQL for the large tables).

    DATABASE_URL=postgres://.../channels_bench python -m bench.fixtures base --stub http://127.0.0.1:18001 \
        --agent-ms 0,200,1000 --spread 50 --out bench/results/.fixtures.json
    DATABASE_URL=... python -m bench.fixtures flat --contacts-small 1000 --contacts-large 1000000 \
        --long 10000 --short 10 --in bench/results/.fixtures.json --out bench/results/.fixtures.json

`base`: one workspace with plenty of credits and an API key; per agent latency an OpenAI-compatible agent
pointed at the stub (`{stub}/lat/{ms}/v1`) and its API channel; a channel with the built-in agent; for the
one-workspace-vs-many comparison (bench/scenarios/s7_workspaces.py), `--spread` + 1 more workspaces, each
with its own key and 0 ms channel: one takes a whole load, the others share the same load.
`flat` (scenario 3): two conversations holding `short - 1` and `long - 1` messages, so the next message is
at position `short` and `long`; two more workspaces holding `contacts-small` and `contacts-large` contacts.
Only for the benchmark's own database: run.py creates it fresh.
"""

import argparse
import json
import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django

django.setup()

from django.db import connection  # noqa: E402
from django.db.models import DateTimeField  # noqa: E402

from billing.credits import credits_grant  # noqa: E402
from channels_app.models import AIAgent, Channel, KnowledgeEntry, Workspace  # noqa: E402
from channels_app.services import apikey_create  # noqa: E402
from contacts.models import Contact  # noqa: E402
from contacts.services import contact_create  # noqa: E402
from conversations.models import Conversation, Message  # noqa: E402

CREDITS = 10**12  # no scenario may run out: a 402 would be counted as an error


RATE_LIMIT_PER_MINUTE = 1_000_000_000  # the limiter still runs (its Redis round trip is part of the cost)


def _workspace(slug: str) -> tuple[Workspace, str]:
    workspace = Workspace.objects.create(name=f"Bench {slug}", slug=slug, rate_limit_per_minute=RATE_LIMIT_PER_MINUTE)
    credits_grant(workspace=workspace, amount=CREDITS, note="bench credits")
    _, key = apikey_create(workspace=workspace, name="bench")
    return workspace, key


def _openai_channel(workspace: Workspace, *, stub: str, latency_ms: int) -> str:
    agent = AIAgent.objects.create(
        workspace=workspace,
        name=f"Stub agent {latency_ms} ms",
        provider="openai",
        base_url=f"{stub.rstrip('/')}/lat/{latency_ms}/v1",
        model="bench-model",
        api_key_env_var="",
        instructions="You are a helpful support agent. Answer briefly.",
        timeout_seconds=30.0,
    )
    return Channel.objects.create(
        workspace=workspace, name=f"Bench {latency_ms} ms", type=Channel.Type.API, agent=agent
    ).pk


def base(args) -> dict:
    workspace, key = _workspace("bench")
    channels = {
        str(ms): _openai_channel(workspace, stub=args.stub, latency_ms=ms)
        for ms in sorted({int(ms) for ms in args.agent_ms.split(",")})
    }
    builtin = AIAgent.objects.create(workspace=workspace, name="Built-in agent", provider="builtin")
    KnowledgeEntry.objects.create(
        agent=builtin, question="How long does shipping take?", answer="Orders ship within 2 business days."
    )
    KnowledgeEntry.objects.create(
        agent=builtin, question="Can I get a refund?", answer="Yes, within 30 days of purchase."
    )
    builtin_channel = Channel.objects.create(
        workspace=workspace, name="Bench built-in", type=Channel.Type.API, agent=builtin
    ).pk
    spread = []
    for n in range(args.spread + 1):
        ws, ws_key = _workspace(f"bench-spread-{n}")
        spread.append(
            {"workspaceId": ws.pk, "apiKey": ws_key, "channelId": _openai_channel(ws, stub=args.stub, latency_ms=0)}
        )
    return {
        "workspaceId": workspace.pk,
        "apiKey": key,
        "channels": channels,
        "builtinChannel": builtin_channel,
        "stub": args.stub,
        "oneWorkspace": spread[0] if spread else None,
        "spreadWorkspaces": spread[1:],
    }


def _prefill_conversation(*, workspace: Workspace, channel: Channel, identifier: str, messages: int) -> str:
    """A conversation holding `messages` answered messages (inbound part 0, reply part 1 of each position)."""
    contact = contact_create(workspace_id=workspace.pk, identifier=identifier, name="Flat cost")
    last_seq = (messages + 1) // 2
    conversation = Conversation.objects.create(
        workspace=workspace, channel=channel, contact=contact, agent=channel.agent, last_seq=last_seq
    )
    prefix = f"msg_b{conversation.pk[-10:]}_"
    _bulk_insert(
        Message,
        count=messages,
        start=0,
        expressions={
            "id": ("%s || g", [prefix]),
            "conversation_id": ("%s", [conversation.pk]),
            "seq": ("g / 2 + 1", []),
            "part": ("g % 2", []),
            "direction": ("CASE WHEN g % 2 = 0 THEN 'INBOUND' ELSE 'OUTBOUND' END", []),
            "type": ("'TEXT'", []),
            "content": (
                "jsonb_build_object('text', jsonb_build_object('body', "
                "'Prefilled message number ' || g || ' of the flat-cost conversation.'))",
                [],
            ),
            "status": ("CASE WHEN g % 2 = 0 THEN 'ANSWERED' ELSE 'SENT' END", []),
            "reply_to_id": ("CASE WHEN g % 2 = 1 THEN %s || (g - 1) END", [prefix]),
            "created_at": ("now() - make_interval(secs => %s - g)", [messages]),
        },
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Conversation._meta.db_table} SET last_message_at = now() WHERE id = %s", [conversation.pk]
        )
    return conversation.pk


def _bulk_contacts(*, workspace: Workspace, count: int, prefix: str) -> None:
    _bulk_insert(
        Contact,
        count=count,
        start=1,
        expressions={
            "id": ("'ct_b' || %s || '_' || g", [workspace.slug[-5:]]),
            "workspace_id": ("%s", [workspace.pk]),
            "identifier": ("%s || g || '@bench.example'", [prefix]),
            "identifier_key": ("lower(%s || g || '@bench.example')", [prefix]),  # contacts.identity
            "name": ("'Contact ' || g", []),
        },
    )


def _bulk_insert(model, *, count: int, start: int, expressions: dict[str, tuple[str, list]]) -> None:
    """INSERT ... SELECT over generate_series(start, start + count - 1) AS g: the named columns from SQL
    expressions of g, every other column from the model field's default (so a new field added by a migration
    does not break the benchmark), timestamps now()."""
    columns, values, params = [], [], []
    for field in model._meta.concrete_fields:
        columns.append(field.column)
        if field.column in expressions:
            sql, args = expressions[field.column]
            values.append(sql)
            params.extend(args)
        elif isinstance(field, DateTimeField) and (field.auto_now or field.auto_now_add):
            values.append("now()")
        elif field.has_default() or not field.null:
            values.append("%s")
            default = field.get_default() if field.has_default() else ("" if field.empty_strings_allowed else None)
            params.append(field.get_db_prep_save(default, connection))
        else:
            values.append("NULL")
    sql = (
        f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) SELECT {', '.join(values)} "
        f"FROM generate_series({int(start)}, {int(start + count - 1)}) AS g"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql.replace("%", "%%").replace("%%s", "%s"), params)


def flat(args) -> dict:
    with open(args.in_path) as handle:
        data = json.load(handle)
    timings = {}
    workspace = Workspace.objects.get(pk=data["workspaceId"])
    channel = Channel.objects.select_related("agent").get(pk=data["channels"][args.channel_ms])
    started = time.monotonic()
    conversations = {}
    for label, position in (("short", args.short), ("long", args.long)):
        conversations[label] = {
            "contactIdentifier": f"flat-{label}@bench.example",
            "position": position,
            "conversationId": _prefill_conversation(
                workspace=workspace, channel=channel, identifier=f"flat-{label}@bench.example", messages=position - 1
            ),
        }
    timings["prefillSeconds"] = round(time.monotonic() - started, 2)
    started = time.monotonic()
    contact_sets = {}
    for label, count in (("small", args.contacts_small), ("large", args.contacts_large)):
        ws, key = _workspace(f"bench-{label}")
        ch = _openai_channel(ws, stub=data["stub"], latency_ms=int(args.channel_ms))
        _bulk_contacts(workspace=ws, count=count, prefix="c")
        contact_sets[label] = {
            "workspaceId": ws.pk,
            "apiKey": key,
            "channelId": ch,
            "contacts": count,
            "identifierPattern": "c{n}@bench.example",
        }
    with connection.cursor() as cursor:
        for model in (Contact, Message, Conversation):
            cursor.execute(f"ANALYZE {model._meta.db_table}")
    timings["contactsSeconds"] = round(time.monotonic() - started, 2)
    data["flat"] = {
        "conversations": conversations,
        "contactSets": contact_sets,
        "timings": timings,
        "channelId": channel.pk,
    }
    return data


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p_base = sub.add_parser("base")
    p_base.add_argument("--stub", required=True)
    p_base.add_argument("--agent-ms", default="0,200,2000")
    p_base.add_argument("--spread", type=int, default=0, help="workspaces sharing a load (plus one alone)")
    p_base.add_argument("--out", required=True)
    p_flat = sub.add_parser("flat")
    p_flat.add_argument("--in", dest="in_path", required=True)
    p_flat.add_argument("--out", required=True)
    p_flat.add_argument("--channel-ms", default="0")
    p_flat.add_argument("--short", type=int, default=10)
    p_flat.add_argument("--long", type=int, default=10_000)
    p_flat.add_argument("--contacts-small", type=int, default=1_000)
    p_flat.add_argument("--contacts-large", type=int, default=1_000_000)
    args = parser.parse_args()
    result = base(args) if args.command == "base" else flat(args)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
