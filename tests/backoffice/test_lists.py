"""The history lists as operators read them: the columns first read, the contact by identifier, failures by
what failed, the message search (indexed on PostgreSQL), and each list's query count."""

import re

import pytest
from django.contrib.admin.utils import quote
from django.db import connection
from django.urls import reverse

from api.models import IdempotencyRecord
from billing.models import UsageLedgerEntry
from channels_app.models import AIAgent, Channel, Workspace, WorkspaceApiKey
from contacts.models import Contact
from conversations.models import Conversation, MediaAsset, Message
from conversations.search import message_search_q
from tests.factories import ChannelFactory, WorkspaceFactory, api_key_for
from tests.history import conversation_with_exchanges


def changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def listed(html: str, model) -> set[str]:
    from django.contrib.admin.utils import unquote

    return {unquote(pk) for pk in re.findall(re.escape(changelist(model)) + r'([^/"?#]+)/change/', html)}


def headers(html: str) -> list[str]:
    head = html.split('<table id="result_list">')[1].split("</thead>")[0]
    return [re.sub(r"<[^>]+>", "", text).strip() for text in re.findall(r'<div class="text">(.*?)</div>', head)]


@pytest.fixture
def history(channel):
    return conversation_with_exchanges(channel=channel)


def test_the_message_list_leads_with_time_contact_content_and_status(admin_client, history):
    html = admin_client.get(changelist(Message)).content.decode()

    assert headers(html) == ["Created", "Contact", "From", "Content", "Status", "Credits", "#"]
    assert "ada@example.com (Ada Lovelace)" in html
    # a failure says what failed; the model's "Agent failed" label is never shown
    assert 'title="agent_timeout">Failed: timeout</span>' in html
    assert "Agent failed" not in html.split('id="changelist-filter"')[0]


def test_failures_are_labelled_by_what_failed(admin_client, history):
    document = history.messages[5]
    for code, label in (
        ("media_unreachable", "Failed: media"),
        ("agent_unavailable", "Failed: agent"),
        ("agent_timeout", "Failed: timeout"),
        ("abandoned", "Failed: abandoned"),
        ("conversation_busy", "Failed: conversation busy"),
        ("internal_error", "Failed: internal error"),
        ("something_new", "Failed: other"),
    ):
        Message.objects.filter(pk=document.pk).update(error_code=code)
        html = admin_client.get(changelist(Message)).content.decode()
        assert f'title="{code}">{label}</span>' in html, code
        page = admin_client.get(reverse("admin:conversations_message_change", args=[quote(document.pk)]))
        assert label in page.content.decode()


def test_the_outcome_and_error_code_filters(admin_client, history, channel):
    other = conversation_with_exchanges(channel=channel, identifier="grace@example.com")
    Message.objects.filter(pk=other.messages[5].pk).update(error_code="media_unreachable")

    def ids(**params):
        return listed(admin_client.get(changelist(Message), params).content.decode(), Message)

    assert ids(outcome="failed") == {history.messages[5].pk, other.messages[5].pk}
    assert ids(outcome="failed-media") == {other.messages[5].pk}
    assert ids(outcome="failed-timeout") == {history.messages[5].pk}
    assert ids(error_code="agent_timeout") == {history.messages[5].pk}
    assert ids(outcome="answered") == {
        history.messages[0].pk,
        history.messages[3].pk,
        other.messages[0].pk,
        other.messages[3].pk,
    }


def test_the_conversation_list_shows_identifier_status_and_last_message(admin_client, history):
    html = admin_client.get(changelist(Conversation), {"q": "ada@"}).content.decode()
    # after the selection box of the Close action (tests/api/test_conversation_close_admin.py)
    assert headers(html)[:4] == ["", "Contact", "Status", "Last message at"]
    assert "ada@example.com (Ada Lovelace)" in html and ">Active<" in html
    assert history.conversation.last_message_at.strftime("%Y-%m-%d %H:%M:%S") in html


def test_a_contact_is_named_by_identifier_wherever_it_is(admin_client, history):
    assert str(history.contact) == "ada@example.com (Ada Lovelace)"
    page = admin_client.get(reverse("admin:conversations_conversation_change", args=[quote(history.conversation.pk)]))
    assert "ada@example.com (Ada Lovelace)" in page.content.decode()
    assert str(Contact(identifier="+15550100")) == "+15550100"


# --- search -----------------------------------------------------------------------------------------------


def test_the_message_list_searches_text_identifier_and_ids(admin_client, history, channel):
    other = conversation_with_exchanges(channel=channel, identifier="grace@hopper.example")
    Message.objects.filter(pk=other.messages[0].pk).update(content={"text": {"body": "Where is my PARCEL?"}})

    def search(term):
        return listed(admin_client.get(changelist(Message), {"q": term}).content.decode(), Message)

    # words of a text message, in any case
    assert search("parcel") == {other.messages[0].pk}
    # part of the contact's identifier: every message of the contact's conversations
    assert search("hopper.ex") == {message.pk for message in other.messages}
    # an id: the message, a conversation's messages, a message's replies
    assert search(history.messages[3].pk) == {history.messages[3].pk, history.messages[4].pk}
    assert search(history.conversation.pk) == {message.pk for message in history.messages}
    # under three characters an identifier must match exactly
    Contact.objects.filter(pk=other.contact.pk).update(identifier="gh")
    assert search("gh") == {message.pk for message in other.messages}
    assert search("g") == set()


def test_the_message_search_is_an_index_scan(history):
    # Planned with sequential and plain index scans priced out, so only bitmap index scans are left: an OR
    # branch (or an expression that does not match its index exactly) without an index would force a scan
    # of the table. The contact's identifier matches here, so the conversation branch is in the plan too.
    search = Message.objects.filter(message_search_q(term="ada@")).order_by("-id")
    sql, params = search.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("EXPLAIN SELECT id FROM contacts_contact WHERE UPPER(identifier::text) LIKE UPPER('%ada@%')")
        contact_plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "BitmapOr" in plan and "message_text_trgm" in plan, plan
    assert "Seq Scan" not in plan, plan
    assert "contact_identifier_trgm" in contact_plan, contact_plan


# --- query counts -----------------------------------------------------------------------------------------

# Each list page's queries with four conversations in four workspaces (admin_client): session, user, the
# paginator's count, the rows, and the choices of a workspace or channel filter (one query each; AIAgent's
# list has both, Channel's a team filter too). The message list has no such filter: its rows bring their contacts along.
LIST_QUERIES = {
    Contact: 5,
    Conversation: 6,  # and the label filter's choices (the labels of the latest 200 labelled conversations)
    Message: 4,
    MediaAsset: 5,
    UsageLedgerEntry: 5,
    IdempotencyRecord: 5,
    Workspace: 5,
    Channel: 7,
    AIAgent: 6,
    WorkspaceApiKey: 5,
}


@pytest.mark.parametrize("model", LIST_QUERIES, ids=lambda model: model.__name__)
def test_list_query_counts_are_pinned(admin_client, channel, model, django_assert_max_num_queries):
    for n in range(4):
        other = ChannelFactory(workspace=WorkspaceFactory()) if n else channel
        conversation_with_exchanges(channel=other, identifier=f"c{n}@example.com")
        api_key_for(other.workspace)
    with django_assert_max_num_queries(LIST_QUERIES[model]):
        assert admin_client.get(changelist(model)).status_code == 200


def test_a_message_search_costs_one_query_more(admin_client, history, django_assert_max_num_queries):
    # the conversations of the contacts whose identifier matches, then the list as before
    with django_assert_max_num_queries(LIST_QUERIES[Message] + 1):
        assert admin_client.get(changelist(Message), {"q": "ada@"}).status_code == 200
