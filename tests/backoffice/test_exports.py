"""Exports: a conversation's transcript (CSV, JSON) and the usage ledger for a date range, streamed."""

import csv
import io
import json
from datetime import timedelta

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from backoffice import exports
from billing.models import UsageLedgerEntry
from conversations.models import Message
from tests.factories import ChannelFactory, WorkspaceFactory
from tests.history import IMAGE_URL, conversation_with_exchanges


def transcript_url(conversation_id: str, format: str) -> str:
    return reverse(
        "admin:backoffice_transcript_export", kwargs={"conversation_id": quote(conversation_id), "format": format}
    )


def ledger_url(format: str) -> str:
    return reverse("admin:backoffice_ledger_export", kwargs={"format": format})


def body_of(response) -> str:
    assert response.streaming, "exports are streamed, not built in memory"
    return b"".join(response.streaming_content).decode()


@pytest.fixture
def history(channel):
    return conversation_with_exchanges(channel=channel)


def test_transcript_as_csv_in_order_with_media_and_failures(admin_client, history):
    response = admin_client.get(transcript_url(history.conversation.pk, "csv"))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="transcript-{history.conversation.pk}.csv"'
    rows = list(csv.DictReader(io.StringIO(body_of(response))))
    assert [row["id"] for row in rows] == [message.pk for message in history.messages]
    assert [row["text"] for row in rows] == [
        "Can I get a refund?",
        "Yes, within 30 days of purchase.",
        "Reply with your order number.",
        "My receipt",
        "Thanks, I can see your receipt.",
        "The invoice",
    ]
    assert (rows[3]["media_url"], rows[3]["media_mime_type"], rows[3]["media_size"]) == (
        IMAGE_URL,
        "image/png",
        "48213",
    )
    assert (rows[5]["status"], rows[5]["error_code"]) == ("FAILED", "agent_timeout")
    assert rows[1]["credits"] == "1" and rows[0]["created_at"].endswith("Z")


def test_transcript_as_json_keeps_the_content(admin_client, history):
    response = admin_client.get(transcript_url(history.conversation.pk, "json"))

    assert response["Content-Type"] == "application/json"
    document = json.loads(body_of(response))
    assert document["conversation"]["id"] == history.conversation.pk
    assert document["conversation"]["contactIdentifier"] == "ada@example.com"
    assert [item["id"] for item in document["messages"]] == [message.pk for message in history.messages]
    assert document["messages"][3]["content"] == {"image": {"url": IMAGE_URL, "caption": "My receipt"}}
    assert document["messages"][5]["errorCode"] == "agent_timeout"


def test_a_formula_in_a_message_stays_text_in_the_csv(admin_client, history):
    Message.objects.create(
        conversation=history.conversation,
        seq=9,
        direction="INBOUND",
        type="TEXT",
        content={"text": {"body": '=HYPERLINK("http://evil.example","click")'}},
        status="ANSWERED",
    )
    rows = list(csv.DictReader(io.StringIO(body_of(admin_client.get(transcript_url(history.conversation.pk, "csv"))))))
    assert rows[-1]["text"] == '\'=HYPERLINK("http://evil.example","click")'


def test_a_transcript_is_read_in_chunks_of_one_query(history, django_assert_num_queries):
    # A chunk size smaller than the conversation: still one query (a cursor read in chunks, not pages).
    with django_assert_num_queries(1):
        rows = list(exports.transcript_rows(conversation=history.conversation, chunk_size=2))
    assert len(rows) == len(history.messages)


def test_transcript_export_needs_the_view_permissions_and_a_known_conversation(client, admin_client, history):
    assert admin_client.get(transcript_url("cv_nope", "csv")).status_code == 404
    assert admin_client.get(transcript_url(history.conversation.pk, "xml")).status_code == 404
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(transcript_url(history.conversation.pk, "csv")).status_code == 403
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_conversation", "view_message"]))
    assert client.get(transcript_url(history.conversation.pk, "csv")).status_code == 200


def test_the_conversation_page_links_to_its_exports(admin_client, history):
    html = admin_client.get(
        reverse("admin:conversations_conversation_change", args=[quote(history.conversation.pk)])
    ).content.decode()
    assert (
        transcript_url(history.conversation.pk, "csv") in html
        and transcript_url(history.conversation.pk, "json") in html
    )


def test_ledger_export_for_a_date_range(admin_client, workspace):
    # given: entries today, three days ago and ten days ago, and another workspace's
    today = timezone.now()
    other = WorkspaceFactory()
    grant = UsageLedgerEntry.objects.get(workspace=workspace)  # the fixture's 100 credits, today
    old = UsageLedgerEntry.objects.create(workspace=workspace, kind="GRANT", delta=5, balance_after=105, note="=1+1")
    older = UsageLedgerEntry.objects.create(workspace=workspace, kind="GRANT", delta=7, balance_after=112)
    UsageLedgerEntry.objects.filter(pk=old.pk).update(created_at=today - timedelta(days=3))
    UsageLedgerEntry.objects.filter(pk=older.pk).update(created_at=today - timedelta(days=10))
    foreign = UsageLedgerEntry.objects.create(workspace=other, kind="GRANT", delta=1, balance_after=1)
    week = {"from": str((today - timedelta(days=6)).date()), "to": str(today.date())}

    # when / then: the week, oldest first, every workspace
    rows = list(csv.DictReader(io.StringIO(body_of(admin_client.get(ledger_url("csv"), week)))))
    assert [row["id"] for row in rows] == [old.pk, grant.pk, foreign.pk]
    assert rows[0]["note"] == "'=1+1" and rows[0]["delta"] == "5"

    # and one workspace, as JSON
    response = admin_client.get(ledger_url("json"), {**week, "workspace": workspace.pk})
    assert response["Content-Disposition"].startswith(f'attachment; filename="ledger-{workspace.pk}-')
    document = json.loads(body_of(response))
    assert (document["from"], document["to"], document["workspaceId"]) == (week["from"], week["to"], workspace.pk)
    assert [entry["id"] for entry in document["entries"]] == [old.pk, grant.pk]
    assert document["entries"][1]["balanceAfter"] == 100


def test_ledger_export_refuses_a_bad_range_an_unknown_workspace_and_a_user_without_the_permission(
    client, admin_client, workspace
):
    response = admin_client.get(ledger_url("csv"), {"from": "2026-11-30", "to": "2026-11-01"})
    assert response.status_code == 400 and b"starts after it ends" in response.content
    assert admin_client.get(ledger_url("csv"), {"workspace": "ws_nope"}).status_code == 404
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_message"))
    client.force_login(staff)
    assert client.get(ledger_url("csv")).status_code == 403


def test_the_dashboard_links_the_ledger_export_for_its_range(admin_client, db):
    ChannelFactory()
    html = admin_client.get("/admin/", {"from": "2026-11-01", "to": "2026-11-07"}).content.decode()
    assert f"{ledger_url('csv')}?from=2026-11-01&amp;to=2026-11-07" in html


@pytest.mark.parametrize(
    "dates",
    [
        {"to": "0001-01-01"},
        {"from": "0001-01-01", "to": "0001-01-02"},
        {"from": "9999-12-31", "to": "9999-12-31"},
        {"from": "9999-12-01"},
    ],
)
def test_extreme_dates_are_refused_before_anything_is_streamed(admin_client, workspace, dates):
    # the ledger export: a 400 saying which days, not a 500 or a stream cut half-way
    for format in ("csv", "json"):
        response = admin_client.get(ledger_url(format), dates)
        assert response.status_code == 400, response.status_code
        assert b"between 2000-01-01 and 9998-12-31" in response.content
    # the dashboard: the default range, with the sentence
    page = admin_client.get("/admin/", dates)
    assert page.status_code == 200
    assert "between 2000-01-01 and 9998-12-31" in page.content.decode()


def test_the_transcript_exports_carry_each_messages_metadata(admin_client, history):
    # given: the integrator's metadata on the first message (as the transcript page shows it)
    first = history.messages[0]
    Message.objects.filter(pk=first.pk).update(metadata={"orderId": "A-1001", "plan": "=pro"})

    # when
    rows = list(csv.DictReader(io.StringIO(body_of(admin_client.get(transcript_url(history.conversation.pk, "csv"))))))
    document = json.loads(body_of(admin_client.get(transcript_url(history.conversation.pk, "json"))))

    # then: CSV as compact JSON (empty for none), JSON as the object
    assert json.loads(rows[0]["metadata"]) == {"orderId": "A-1001", "plan": "=pro"}
    assert [row["metadata"] for row in rows[1:]] == [""] * (len(rows) - 1)
    assert document["messages"][0]["metadata"] == {"orderId": "A-1001", "plan": "=pro"}
    assert document["messages"][1]["metadata"] == {}


def test_the_json_transcript_writes_a_missing_contact_name_as_null_like_the_api(admin_client, api, history):
    # given: a contact without a name
    contact = history.conversation.contact
    contact.name = ""
    contact.save()

    # when
    document = json.loads(body_of(admin_client.get(transcript_url(history.conversation.pk, "json"))))

    # then: what the read API writes for the same contact
    assert document["conversation"]["contactName"] is None
    read = api.client.get(f"/api/v1/contacts/{contact.pk}", HTTP_X_API_KEY=api.key)
    assert read.json()["contact"]["name"] is None
