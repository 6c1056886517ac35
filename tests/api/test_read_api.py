"""The read and data API (README "The read API"): shapes against the OpenAPI document, workspace scoping,
keyset pagination, the stored result, usage figures, and statements per request."""

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from drf_spectacular.generators import SchemaGenerator

from billing.models import UsageLedgerEntry
from contacts.models import Contact
from conversations.models import Conversation, Message
from tests.api.test_schema import validator
from tests.conftest import SEED_TEXT, error_of
from tests.factories import ChannelFactory, WorkspaceFactory, api_key_for


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def check(schema, component: str, body: dict) -> dict:
    errors = sorted(validator(schema, component, strict=True).iter_errors(body), key=str)
    assert not errors, [e.message for e in errors]
    return body


def get(client, key, url, **params):
    return client.get(url, params, HTTP_X_API_KEY=key)


def text(body: str, identifier: str = "user@example.com", **extra) -> dict:
    return {**SEED_TEXT, "contactIdentifier": identifier, "content": {"text": {"body": body}}, **extra}


@pytest.fixture
def answered(api):
    response = api.post(text("Can I get a refund?", metadata={"orderId": "A-1001"}))
    assert response.status_code == 200, response.content
    return response


def test_every_endpoint_answers_its_documented_shape(api, client, api_key, schema, answered):
    body = answered.json()
    contact_id, conversation_id, message_id = body["contactId"], body["conversationId"], body["messageId"]

    contact = check(schema, "ContactResult", get(client, api_key, f"/api/v1/contacts/{contact_id}").json())
    assert contact["contact"]["identifier"] == "user@example.com"
    assert contact["contact"]["attributes"] == {}
    assert contact["contact"]["lastMessageAt"] == body["conversation"]["lastMessageAt"]
    found = check(
        schema, "ContactPage", get(client, api_key, "/api/v1/contacts", identifier=" USER@example.COM ").json()
    )
    assert [c["id"] for c in found["data"]] == [contact_id] and found["nextCursor"] is None
    none = check(schema, "ContactPage", get(client, api_key, "/api/v1/contacts", identifier="other@example.com").json())
    assert none["data"] == []

    conversation = check(
        schema, "ConversationResult", get(client, api_key, f"/api/v1/conversations/{conversation_id}").json()
    )
    assert conversation["conversation"] == body["conversation"]  # the one serializer of the 200 body
    listed = check(schema, "ConversationPage", get(client, api_key, "/api/v1/conversations", status="ACTIVE").json())
    assert listed["data"] == [body["conversation"]]

    messages = check(
        schema, "MessagePage", get(client, api_key, f"/api/v1/conversations/{conversation_id}/messages").json()
    )
    inbound, reply = messages["data"]
    assert inbound == {
        "id": message_id,
        "direction": "INBOUND",
        "sender_type": "CONTACT",
        "type": "TEXT",
        "content": {"text": {"body": "Can I get a refund?"}, "type": "text"},
        "status": "ANSWERED",
        "errorCode": None,
        "metadata": {"orderId": "A-1001"},
        "actions": [],
        "createdAt": inbound["createdAt"],
    }
    assert (reply["id"], reply["sender_type"], reply["content"]) == (
        body["aiMessages"][0]["id"],
        "AI",
        body["aiMessages"][0]["content"],
    )

    message = get(client, api_key, f"/api/v1/messages/{message_id}")
    check(schema, "MessageGet", message.json())
    assert message.json()["message"] == inbound

    usage = check(schema, "UsageResult", get(client, api_key, "/api/v1/usage").json())
    assert len(usage["days"]) == 30

    erased = client.delete(f"/api/v1/contacts/{contact_id}", HTTP_X_API_KEY=api_key)
    check(schema, "ErasureResult", erased.json())


def test_message_result_is_the_posted_200_body_byte_for_byte(client, api_key, answered):
    response = get(client, api_key, f"/api/v1/messages/{answered.json()['messageId']}")

    assert response.status_code == 200
    assert response.content.endswith(b',"result":' + answered.content + b"}")


def test_message_result_is_null_until_answered_and_for_a_failed_message(api, client, api_key, channel, scripted_agent):
    from conversations.agents.errors import AgentUnavailable

    seen = {}

    def look(**kwargs):
        message_id = Message.objects.get(direction="INBOUND").pk
        seen["pending"] = get(client, api_key, f"/api/v1/messages/{message_id}").json()

    scripted_agent.take_over(channel.agent).script(look, AgentUnavailable())
    assert api.post().status_code == 200
    assert seen["pending"]["message"]["status"] == "PENDING" and seen["pending"]["result"] is None

    failed = api.post(text("again"))
    assert failed.status_code == 502
    message_id = Message.objects.get(direction="INBOUND", status="FAILED").pk
    body = get(client, api_key, f"/api/v1/messages/{message_id}").json()
    assert (body["message"]["status"], body["message"]["errorCode"], body["result"]) == (
        "FAILED",
        "agent_unavailable",
        None,
    )


def test_a_conversation_whose_only_message_failed_was_last_written_to_when_it_was_created(
    api, client, api_key, channel, scripted_agent
):
    from conversations.agents.errors import AgentUnavailable

    # given: the conversation's first message fails
    scripted_agent.take_over(channel.agent).script(AgentUnavailable())
    failed = api.post(text("Anyone there?"))
    assert failed.status_code == 502

    # when
    conversation = Conversation.objects.get()
    body = get(client, api_key, f"/api/v1/conversations/{conversation.pk}").json()["conversation"]

    # then: never a last message before the conversation began
    assert conversation.last_message_at == conversation.created_at
    assert body["lastMessageAt"] == body["createdAt"]


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("/api/v1/contacts/{contact}", "contact_not_found"),
        ("/api/v1/conversations/{conversation}", "conversation_not_found"),
        ("/api/v1/conversations/{conversation}/messages", "conversation_not_found"),
        ("/api/v1/messages/{message}", "message_not_found"),
    ],
)
def test_another_workspaces_ids_are_not_found(client, answered, url, code):
    body = answered.json()
    other = WorkspaceFactory()
    ChannelFactory(workspace=other)
    other_key = api_key_for(other)[1]
    ids = {"contact": body["contactId"], "conversation": body["conversationId"], "message": body["messageId"]}

    response = get(client, other_key, url.format(**ids))

    assert error_of(response, status=404)["code"] == code
    if "contacts" in url:
        assert error_of(client.delete(url.format(**ids), HTTP_X_API_KEY=other_key), status=404)["code"] == code
        assert Contact.objects.get(pk=body["contactId"]).identifier == "user@example.com"
    # and the other workspace's lists do not show them
    assert get(client, other_key, "/api/v1/conversations").json()["data"] == []
    assert get(client, other_key, "/api/v1/contacts", identifier="user@example.com").json()["data"] == []


def test_every_read_endpoint_needs_the_key(client, db):
    for url in ("/api/v1/contacts", "/api/v1/conversations", "/api/v1/usage", "/api/v1/messages/msg_x"):
        assert error_of(client.get(url), status=401)["code"] == "missing_api_key"
    assert error_of(client.delete("/api/v1/contacts/ct_x"), status=401)["code"] == "missing_api_key"


def test_read_requests_count_against_the_rate_limit(client, api_key, workspace, answered):
    workspace.rate_limit_per_minute = 2
    workspace.save()
    from django.core.cache import cache

    cache.clear()
    statuses = [get(client, api_key, "/api/v1/usage").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def _seed_messages(conversation: Conversation, count: int, *, start: int = 1) -> None:
    Message.objects.bulk_create(
        Message(
            conversation=conversation,
            seq=seq,
            part=part,
            direction="INBOUND" if part == 0 else "OUTBOUND",
            type="TEXT",
            content={"text": {"body": f"m{seq}.{part}"}},
            status="ANSWERED" if part == 0 else "SENT",
        )
        for seq in range(start, start + count)
        for part in (0, 1)
    )


def test_messages_page_through_more_rows_than_one_page_oldest_first_and_stable_under_inserts(client, api_key, answered):
    conversation = Conversation.objects.get(pk=answered.json()["conversationId"])
    _seed_messages(conversation, 30, start=2)  # 2 + 60 messages
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 25, **({"cursor": cursor} if cursor else {})}
        body = get(client, api_key, f"/api/v1/conversations/{conversation.pk}/messages", **params).json()
        seen += [m["content"]["text"]["body"] for m in body["data"]]
        cursor, pages = body["nextCursor"], pages + 1
        if pages == 1:
            _seed_messages(conversation, 5, start=100)  # new messages while the client pages
        if cursor is None:
            break
    assert pages == 3
    expected = [f"m{seq}.{part}" for seq in [*range(2, 32), *range(100, 105)] for part in (0, 1)]
    assert seen[2:] == expected and len(seen) == len(set(seen)) == 72


def test_conversations_in_creation_order_page_without_skips_while_they_get_messages(api, client, api_key, db):
    # given: six conversations (one per contact), created one after the other
    ids = [api.post(text(f"Hello {n}", identifier=f"c{n}@example.com")).json()["conversationId"] for n in range(6)]

    # when: the client pages by two while the last conversations it has not read yet get messages
    # (which moves them to the top of the lastMessageAt order, past its cursor)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"order": "created", "limit": 2, **({"cursor": cursor} if cursor else {})}
        body = get(client, api_key, "/api/v1/conversations", **params).json()
        seen += [conversation["id"] for conversation in body["data"]]
        cursor, pages = body["nextCursor"], pages + 1
        if pages == 1:
            for n in (0, 1):
                assert api.post(text("Still there?", identifier=f"c{n}@example.com")).status_code == 200
        if cursor is None:
            break

    # then: every conversation once, newest created first
    assert seen == ids[::-1]
    # and a cursor of the other order is refused, as is an unknown order
    other = get(client, api_key, "/api/v1/conversations", limit=1).json()["nextCursor"]
    refused = get(client, api_key, "/api/v1/conversations", order="created", cursor=other)
    assert error_of(refused, status=400)["details"] == {"cursor": "invalid"}
    assert list(error_of(get(client, api_key, "/api/v1/conversations", order="oldest"), status=400)["details"]) == [
        "order"
    ]


def test_conversations_and_contacts_page_newest_first_without_repeats_under_inserts(
    client, api_key, workspace, channel
):
    from contacts.services import contact_create

    now = datetime(2026, 11, 1, tzinfo=UTC)
    contacts = [contact_create(workspace_id=workspace.pk, identifier=f"c{i}@example.com", name="") for i in range(7)]
    for index, contact in enumerate(contacts):
        Conversation.objects.create(
            workspace=workspace,
            channel=channel,
            contact=contact,
            agent=channel.agent,
            last_message_at=now + timedelta(minutes=index % 3),  # ties, settled by id
            status="CLOSED" if index % 2 else "ACTIVE",
        )
    order = list(Conversation.objects.order_by("-last_message_at", "-id").values_list("id", flat=True))
    first = get(client, api_key, "/api/v1/conversations", limit=3).json()
    late = Conversation.objects.create(
        workspace=workspace,
        channel=channel,
        contact=contacts[0],
        agent=channel.agent,
        last_message_at=now,
        status="CLOSED",
    )  # inserted after page 1, below its cursor: it shows up later, and nothing repeats or is skipped
    rest, cursor = [], first["nextCursor"]
    while cursor:
        page = get(client, api_key, "/api/v1/conversations", limit=3, cursor=cursor).json()
        rest += [c["id"] for c in page["data"]]
        cursor = page["nextCursor"]
    got = [c["id"] for c in first["data"]] + rest
    assert [i for i in got if i != late.pk] == order and len(got) == 8 == len(set(got)) and late.pk in got

    closed = get(client, api_key, "/api/v1/conversations", status="CLOSED", contactId=contacts[1].pk).json()
    assert [c["contactId"] for c in closed["data"]] == [contacts[1].pk]
    by_channel = get(client, api_key, "/api/v1/conversations", channelId=channel.pk, limit=100).json()
    assert len(by_channel["data"]) == 8

    listed, cursor = [], None
    while True:
        page = get(client, api_key, "/api/v1/contacts", limit=2, **({"cursor": cursor} if cursor else {})).json()
        listed += [c["id"] for c in page["data"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert listed == [c.pk for c in sorted(contacts, key=lambda c: (c.created_at, c.pk), reverse=True)]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'["x"]').decode()}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'["2026-13-45", "cv_x"]').decode()}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        # digits that are not ASCII: int() refuses some (a 500 before) and reads others as numbers
        ({"limit": "²"}, "limit"),
        ({"limit": "¹"}, "limit"),
        ({"limit": "①"}, "limit"),
        ({"limit": "٣"}, "limit"),
        ({"limit": "1٠"}, "limit"),
        ({"limit": " 5"}, "limit"),
        ({"status": "OPEN"}, "status"),
    ],
)
def test_bad_paging_parameters_are_400_naming_them(client, api_key, db, params, field):
    error = error_of(get(client, api_key, "/api/v1/conversations", **params), status=400)
    assert (error["code"], list(error["details"])) == ("invalid_request", [field])


@pytest.mark.parametrize("path", ["/api/v1/contacts", "/api/v1/conversations"])
def test_every_list_refuses_a_limit_of_digits_that_are_not_ascii(client, api_key, db, path):
    error = error_of(get(client, api_key, path, limit="³"), status=400)
    assert list(error["details"]) == ["limit"]


def test_a_cursor_of_another_list_is_400(client, api_key, answered):
    conversation_id = answered.json()["conversationId"]
    cursor = base64.urlsafe_b64encode(json.dumps(["2026-11-01T00:00:00+00:00", "cv_x"]).encode()).decode()
    response = get(client, api_key, f"/api/v1/conversations/{conversation_id}/messages", cursor=cursor)
    assert error_of(response, status=400)["details"] == {"cursor": "invalid"}


def test_usage_days_are_the_ledgers_charges_per_utc_day(api, client, api_key, workspace, answered):
    api.post(text("How long does shipping take?"))
    charges = UsageLedgerEntry.objects.filter(workspace=workspace, kind="CHARGE")
    day = charges.first().created_at.astimezone(UTC).date()
    # one charge of yesterday 23:59 UTC, which belongs to yesterday
    late = charges.first()
    UsageLedgerEntry.objects.filter(pk=late.pk).update(
        created_at=datetime.combine(day, datetime.min.time(), tzinfo=UTC) - timedelta(seconds=1)
    )

    body = get(
        client, api_key, "/api/v1/usage", **{"from": (day - timedelta(days=1)).isoformat(), "to": day.isoformat()}
    ).json()

    workspace.refresh_from_db()
    assert (body["balance"], body["reserved"]) == (workspace.credit_balance, workspace.credit_reserved)
    totals = {
        "messages": charges.count(),
        "credits": -sum(c.delta for c in charges),
        "inputTokens": sum(c.input_tokens for c in charges),
        "outputTokens": sum(c.output_tokens for c in charges),
    }
    assert [d["date"] for d in body["days"]] == [(day - timedelta(days=1)).isoformat(), day.isoformat()]
    assert [d["messages"] for d in body["days"]] == [1, 1]
    assert {k: sum(d[k] for d in body["days"]) for k in totals} == totals


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-11-01", "to": "2027-11-02"}, "to"),
        ({"from": "2026-11-02", "to": "2026-11-01"}, "from"),
        ({"from": "20261101"}, "from"),
        ({"to": "yesterday"}, "to"),
    ],
)
def test_usage_refuses_bad_ranges(client, api_key, db, params, field):
    error = error_of(get(client, api_key, "/api/v1/usage", **params), status=400)
    assert list(error["details"]) == [field]


def test_usage_takes_366_days(client, api_key, db):
    body = get(client, api_key, "/api/v1/usage", **{"from": "2028-01-01", "to": "2028-12-31"}).json()
    assert len(body["days"]) == 366


# Statements per request: the key (1, and its last_used_at at most once a minute, warmed here) plus:
READS = [
    ("/api/v1/contacts/{contact}", {}, 1),
    ("/api/v1/contacts", {"identifier": "user@example.com"}, 1),
    ("/api/v1/conversations", {}, 1),
    ("/api/v1/conversations/{conversation}", {}, 1),
    ("/api/v1/conversations/{conversation}/messages", {}, 2),  # the conversation's workspace, the page
    ("/api/v1/messages/{message}", {}, 1),
    ("/api/v1/usage", {}, 1),
]


@pytest.mark.parametrize(("url", "params", "expected"), READS)
def test_statements_per_read_request(client, api_key, answered, assert_statements, url, params, expected):
    body = answered.json()
    ids = {"contact": body["contactId"], "conversation": body["conversationId"], "message": body["messageId"]}
    get(client, api_key, "/api/v1/usage")  # last_used_at is fresh now

    with assert_statements(1 + expected):
        response = get(client, api_key, url.format(**ids), **params)

    assert response.status_code == 200


def test_statements_of_a_page_do_not_grow_with_its_length(client, api_key, answered, assert_statements):
    conversation = Conversation.objects.get(pk=answered.json()["conversationId"])
    _seed_messages(conversation, 60, start=2)
    get(client, api_key, "/api/v1/usage")
    first = get(client, api_key, f"/api/v1/conversations/{conversation.pk}/messages", limit=100).json()

    with assert_statements(3):
        get(client, api_key, f"/api/v1/conversations/{conversation.pk}/messages", cursor=first["nextCursor"])


READ_OPERATIONS = {
    ("/api/v1/contacts/{contactId}", "get"): "ContactResult",
    ("/api/v1/contacts/{contactId}", "delete"): "ErasureResult",
    ("/api/v1/contacts", "get"): "ContactPage",
    ("/api/v1/conversations", "get"): "ConversationPage",
    ("/api/v1/conversations/{conversationId}", "get"): "ConversationResult",
    ("/api/v1/conversations/{conversationId}/messages", "get"): "MessagePage",
    ("/api/v1/messages/{messageId}", "get"): "MessageGet",
    ("/api/v1/usage", "get"): "UsageResult",
}


@pytest.mark.parametrize(("path", "method"), list(READ_OPERATIONS))
def test_each_read_operation_is_documented_with_a_valid_example_and_the_key(schema, path, method):
    operation = schema["paths"][path][method]
    component = READ_OPERATIONS[(path, method)]
    ok = operation["responses"]["200"]["content"]["application/json"]
    assert ok["schema"]["$ref"].endswith(f"/{component}")
    (example,) = ok["examples"].values()
    check(schema, component, example["value"])
    assert operation["security"] == [{"ApiKeyAuth": []}]  # Swagger's "Try it out" sends X-API-Key
    for status in ("401", "429", *(("404",) if "{" in path else ())):
        assert status in operation["responses"]


# --- found by a hostile run: values PostgreSQL cannot store never reach it ---------------------------------


@pytest.mark.parametrize(
    "url, code",
    [
        ("/api/v1/contacts/%00", "contact_not_found"),
        ("/api/v1/conversations/%00", "conversation_not_found"),
        ("/api/v1/conversations/cv_x%00/messages", "conversation_not_found"),
        ("/api/v1/messages/%00", "message_not_found"),
    ],
)
def test_an_id_with_nul_in_the_path_is_not_found(client, api_key, url, code):
    assert error_of(get(client, api_key, url))["code"] == code
    assert error_of(client.delete("/api/v1/contacts/%00", HTTP_X_API_KEY=api_key))["code"] == "contact_not_found"


@pytest.mark.parametrize("param", ["identifier", "channelId", "contactId", "status"])
def test_a_query_value_with_nul_is_400_naming_it(client, api_key, param):
    # (a lone surrogate cannot arrive in a query string: Django decodes percent-escapes as UTF-8, replacing)
    url = "/api/v1/contacts" if param == "identifier" else "/api/v1/conversations"
    response = get(client, api_key, url, **{param: "a\x00b"})
    assert response.status_code == 400
    assert list(error_of(response)["details"]) == [param]


@pytest.mark.parametrize("url", ["/api/v1/contacts", "/api/v1/conversations"])
@pytest.mark.parametrize("bad", ["a\x00b", "\ud800"])
def test_a_forged_cursor_holding_nul_or_a_lone_surrogate_is_400(client, api_key, url, bad):
    forged = base64.urlsafe_b64encode(json.dumps(["2026-12-01T00:00:00Z", bad]).encode()).decode().rstrip("=")
    response = get(client, api_key, url, cursor=forged)
    assert response.status_code == 400
    assert error_of(response)["details"] == {"cursor": "invalid"}


@pytest.mark.parametrize(
    "params",
    [{"to": "9999-12-31"}, {"from": "9999-12-30", "to": "9999-12-31"}, {"to": "0001-01-01"}, {"from": "2026-W48-1"}],
)
def test_usage_dates_at_the_calendars_edges_are_400_not_500(client, api_key, params):
    response = get(client, api_key, "/api/v1/usage", **params)
    assert response.status_code == 400
    assert set(error_of(response)["details"]) <= {"from", "to"}
