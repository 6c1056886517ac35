"""The operators' back office: history is read-only for everyone, configuration is editable, credits move only
through the ledger, API keys never show their secret or hash."""

import re

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth.models import Permission, User
from django.contrib.messages.storage.cookie import CookieStorage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework_api_key.models import APIKey

from api.models import IdempotencyRecord
from billing.models import UsageLedgerEntry
from channels_app.models import AIAgent, Channel, Team, Workspace, WorkspaceApiKey
from contacts.models import Contact
from conversations.models import Conversation, MediaAsset, Message
from knowledge.models import Document
from tests.conftest import error_of
from tests.factories import AIAgentFactory, ChannelFactory, WorkspaceFactory, api_key_for
from tests.history import DOCUMENT_URL, IMAGE_URL, conversation_with_exchanges

HISTORY = [Contact, Conversation, Message, MediaAsset, UsageLedgerEntry, IdempotencyRecord]


def editable_controls(html: str) -> list[str]:
    """The inputs, selects and text areas of the page's main form that a person could change."""
    form = html.split("</form>")[0]
    controls = re.findall(r"<(?:input|select|textarea)\b[^>]*>", form)
    return [control for control in controls if 'type="hidden"' not in control]


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=[quote(a) for a in args])


def main_content(html: str) -> str:
    """The page without the navigation sidebar (which links to every model's add page)."""
    return html.split('id="content-main"')[1]


@pytest.fixture
def history(channel):
    return conversation_with_exchanges(channel=channel)


def history_rows(history):
    conversation = history.conversation
    return {
        Contact: history.contact,
        Conversation: conversation,
        Message: history.messages[0],
        MediaAsset: MediaAsset.objects.get(),
        UsageLedgerEntry: UsageLedgerEntry.objects.filter(kind="CHARGE").first(),
        IdempotencyRecord: IdempotencyRecord.objects.get(),
    }


# --- history: read-only for everyone ----------------------------------------------------------------------


@pytest.mark.parametrize("model", HISTORY, ids=lambda model: model.__name__)
def test_history_lists_and_opens_read_only_for_a_superuser(admin_client, history, model):
    obj = history_rows(history)[model]

    # the list loads, without an add button or bulk actions (but closing conversations, which changes no
    # history: tests/api/test_conversation_close_admin.py)
    listing = admin_client.get(admin_url(model, "changelist"))
    assert listing.status_code == 200
    html = main_content(listing.content.decode())
    assert "addlink" not in html
    if model is Conversation:
        assert re.findall(r'<option value="(\w+)"', html) == ["close"]
    else:
        assert 'name="action"' not in html
    assert admin_url(model, "change", obj.pk) in html

    # the detail opens read-only: no save or delete control
    detail = admin_client.get(admin_url(model, "change", obj.pk))
    assert detail.status_code == 200
    html = main_content(detail.content.decode())
    assert 'name="_save"' not in html and 'name="_continue"' not in html and 'name="_addanother"' not in html
    assert "deletelink" not in html
    assert editable_controls(html) == []


@pytest.mark.parametrize("model", HISTORY, ids=lambda model: model.__name__)
def test_history_cannot_be_added_changed_or_deleted_even_by_a_superuser(admin_client, history, model):
    obj = history_rows(history)[model]
    before = model.objects.count()

    assert admin_client.get(admin_url(model, "add")).status_code == 403
    assert admin_client.post(admin_url(model, "add"), {}).status_code == 403
    assert admin_client.post(admin_url(model, "change", obj.pk), {}).status_code == 403
    assert admin_client.get(admin_url(model, "delete", obj.pk)).status_code == 403
    assert admin_client.post(admin_url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    admin_client.post(
        admin_url(model, "changelist"), {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"}
    )

    assert model.objects.count() == before
    assert model.objects.filter(pk=obj.pk).exists()
    model_admin = admin.site._registry[model]
    assert model_admin.show_full_result_count is False


def listed(html: str, model) -> set[str]:
    """The primary keys of the rows a list page links to (the lists show contacts and times, not ids)."""
    prefix = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    return {unquote(pk) for pk in re.findall(re.escape(prefix) + r'([^/"?#]+)/change/', html)}


def test_history_search_and_filters(admin_client, history, channel):
    other = conversation_with_exchanges(channel=channel, identifier="grace@example.com")
    Conversation.objects.filter(pk=other.conversation.pk).update(status="CLOSED")

    found = admin_client.get(admin_url(Conversation, "changelist"), {"q": "grace@"}).content.decode()
    assert listed(found, Conversation) == {other.conversation.pk}

    closed = admin_client.get(admin_url(Conversation, "changelist"), {"status__exact": "CLOSED"}).content.decode()
    assert listed(closed, Conversation) == {other.conversation.pk}

    messages = admin_client.get(
        admin_url(Message, "changelist"), {"conversation__id__exact": history.conversation.pk}
    ).content.decode()
    assert listed(messages, Message) == {m.pk for m in history.messages}

    images = admin_client.get(admin_url(Message, "changelist"), {"type__exact": "IMAGE"}).content.decode()
    assert history.messages[3].pk in listed(images, Message) and history.messages[0].pk not in listed(images, Message)

    contacts = admin_client.get(admin_url(Contact, "changelist"), {"q": "ada@"}).content.decode()
    assert listed(contacts, Contact) == {history.contact.pk}


# --- the transcript ---------------------------------------------------------------------------------------


def test_conversation_page_shows_the_transcript_like_a_chat(admin_client, history):
    # when
    response = admin_client.get(admin_url(Conversation, "change", history.conversation.pk))

    # then
    assert response.status_code == 200
    html = response.content.decode()
    transcript = html.split('id="transcript"')[1]
    # in (seq, part) order, contact and agent apart
    positions = re.findall(
        r'class="message (from-contact|from-agent)"\s+data-seq="(\d+)" data-part="(\d+)" '
        r'data-type="(\w+)"',
        transcript,
    )
    assert positions == [
        ("from-contact", "1", "0", "TEXT"),
        ("from-agent", "1", "1", "TEXT"),
        ("from-agent", "1", "2", "TEXT"),
        ("from-contact", "2", "0", "IMAGE"),
        ("from-agent", "2", "1", "TEXT"),
        ("from-contact", "3", "0", "DOCUMENT"),
    ]
    texts = [
        "Can I get a refund?",
        "Yes, within 30 days of purchase.",
        "Reply with your order number.",
        "My receipt",
        "Thanks, I can see your receipt.",
        "The invoice",
    ]
    assert [transcript.index(text) for text in texts] == sorted(transcript.index(text) for text in texts)
    # media: a link (never embedded), its type
    assert f'href="{IMAGE_URL}"' in transcript and f'href="{DOCUMENT_URL}"' in transcript
    assert 'rel="noopener noreferrer nofollow"' in transcript and "<img" not in transcript
    assert "(image, image/png, 47.1\xa0KB)" in transcript
    assert "invoice-42.pdf</a>" in transcript and "(document, application/pdf, 1.5\xa0MB)" in transcript
    assert admin_url(MediaAsset, "change", MediaAsset.objects.get().pk) in transcript  # while it is cached
    # the credits each reply cost, on its first part; a failed message says so
    assert re.findall(r'class="credits">(\d+) credits?<', transcript) == ["1", "2"]
    assert "Not answered: agent_timeout" in transcript
    # who wrote, and when
    assert "Ada Lovelace" in transcript and history.conversation.agent.name in transcript
    assert history.messages[0].created_at.strftime("%Y-%m-%d %H:%M:%S") in transcript
    # each message opens on its own page
    assert admin_url(Message, "change", history.messages[3].pk) in transcript


def test_transcript_shows_a_messages_metadata_escaped(admin_client, history):
    Message.objects.create(
        conversation=history.conversation,
        seq=4,
        part=0,
        direction="INBOUND",
        type="TEXT",
        content={"text": {"body": "Where is my order?"}},
        metadata={"orderId": "A-1001", "page": "<script>alert(3)</script>"},
        status="ANSWERED",
    )

    transcript = admin_client.get(admin_url(Conversation, "change", history.conversation.pk)).content.decode()
    transcript = transcript.split('id="transcript"')[1]

    assert transcript.count('class="message-metadata"') == 1  # only the message that has metadata
    assert "<dt>orderId</dt><dd>A-1001</dd>" in transcript
    assert "<dd>&lt;script&gt;alert(3)&lt;/script&gt;</dd>" in transcript and "<script>alert(3)" not in transcript
    # and the message's own page shows it too
    message = Message.objects.get(seq=4)
    assert "A-1001" in admin_client.get(admin_url(Message, "change", message.pk)).content.decode()


def test_transcript_escapes_content_and_links_only_http_urls(admin_client, history):
    conversation = history.conversation
    Message.objects.create(
        conversation=conversation,
        seq=4,
        part=0,
        direction="INBOUND",
        type="TEXT",
        content={"text": {"body": "<script>alert(1)</script>"}},
        status="ANSWERED",
    )
    Message.objects.create(
        conversation=conversation,
        seq=5,
        part=0,
        direction="INBOUND",
        type="IMAGE",
        content={"image": {"url": "javascript:alert(2)", "caption": "<b>x</b>"}},
        status="ANSWERED",
    )

    html = admin_client.get(admin_url(Conversation, "change", conversation.pk)).content.decode()

    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="javascript:' not in html and "<code>javascript:alert(2)</code>" in html
    assert "<b>x</b>" not in html


def test_transcript_of_a_long_conversation_shows_the_latest_messages(admin_client, history, settings):
    from conversations import admin as conversations_admin

    conversation = history.conversation
    Message.objects.bulk_create(
        [
            Message(
                conversation=conversation,
                seq=seq,
                part=0,
                direction="INBOUND",
                type="TEXT",
                content={"text": {"body": f"question {seq}"}},
                status="ANSWERED",
            )
            for seq in range(4, 4 + conversations_admin.TRANSCRIPT_MAX_MESSAGES)
        ]
    )

    html = admin_client.get(admin_url(Conversation, "change", conversation.pk)).content.decode()

    assert html.count('class="message ') == conversations_admin.TRANSCRIPT_MAX_MESSAGES
    assert f"question {3 + conversations_admin.TRANSCRIPT_MAX_MESSAGES}" in html
    assert "Can I get a refund?" not in html  # the oldest are on the messages list
    assert f"?conversation__id__exact={conversation.pk}" in html


# --- lists stay cheap -------------------------------------------------------------------------------------

LISTS = [
    Contact,
    Conversation,
    Message,
    MediaAsset,
    UsageLedgerEntry,
    IdempotencyRecord,
    Workspace,
    Channel,
    AIAgent,
    WorkspaceApiKey,
]


def queries_for(client, url) -> int:
    with CaptureQueriesContext(connection) as context:
        assert client.get(url).status_code == 200
    return len(context.captured_queries)


@pytest.mark.parametrize("model", LISTS, ids=lambda model: model.__name__)
def test_list_pages_load_with_a_bounded_number_of_queries(admin_client, channel, model):
    # given: one conversation's worth of rows, measured, then many more
    conversation_with_exchanges(channel=channel, identifier="c0@example.com")
    api_key_for(channel.workspace)
    url = admin_url(model, "changelist")
    few = queries_for(admin_client, url)
    for n in range(1, 6):
        other = ChannelFactory(workspace=WorkspaceFactory())
        conversation_with_exchanges(channel=other, identifier=f"c{n}@example.com")
        api_key_for(other.workspace)

    # when / then: the count does not grow with the rows (no query per row)
    assert queries_for(admin_client, url) <= few + 2  # the workspace/channel filters list one row more each
    assert few <= 12


def test_conversation_page_queries_do_not_grow_with_the_transcript(admin_client, history):
    url = admin_url(Conversation, "change", history.conversation.pk)
    few = queries_for(admin_client, url)
    Message.objects.bulk_create(
        [
            Message(
                conversation=history.conversation,
                seq=seq,
                part=part,
                direction="INBOUND" if part == 0 else "OUTBOUND",
                type="TEXT",
                content={"text": {"body": "hi"}},
                status="ANSWERED",
                credits=1 if part == 1 else 0,
            )
            for seq in range(4, 40)
            for part in (0, 1)
        ]
    )
    assert queries_for(admin_client, url) == few


# --- configuration: workspaces and credits ----------------------------------------------------------------


def test_workspace_balance_is_read_only_and_changes_only_through_the_ledger(admin_client, workspace):
    url = admin_url(Workspace, "change", workspace.pk)
    page = admin_client.get(url).content.decode()
    assert 'name="credit_balance"' not in page and 'name="credit_reserved"' not in page
    assert admin_url(Workspace, "grant_credits", workspace.pk) in page
    assert "deletelink" not in page

    # a change form that tries to set the balance changes only the editable fields
    response = admin_client.post(
        url,
        {
            "name": "Renamed",
            "slug": workspace.slug,
            "rate_limit_per_minute": "",
            "credit_balance": "999999",
            "credit_reserved": "0",
        },
    )
    assert response.status_code == 302
    workspace.refresh_from_db()
    assert (workspace.name, workspace.credit_balance) == ("Renamed", 100)


def test_workspace_page_links_to_its_ledger_keys_channels_and_agents(admin_client, workspace):
    # the ledger's link comes from billing's admin, which extends channels_app's workspace page
    page = admin_client.get(admin_url(Workspace, "change", workspace.pk)).content.decode()
    links = re.findall(r'<a href="([^"?]+)\?workspace__id__exact=([^"]+)">([^<]+)</a>', page)
    assert [(url, label) for url, _, label in links] == [
        (admin_url(UsageLedgerEntry, "changelist"), "Ledger"),
        (admin_url(WorkspaceApiKey, "changelist"), "API keys"),
        (admin_url(Channel, "changelist"), "Channels"),
        (admin_url(Team, "changelist"), "Teams"),
        (admin_url(AIAgent, "changelist"), "AI agents"),
    ]
    assert {ref for _, ref, _ in links} == {workspace.pk}  # a query value, URL-encoded (not admin-quoted)


def test_grant_credits_form_adds_a_ledger_entry(admin_client, admin_user, workspace):
    url = admin_url(Workspace, "grant_credits", workspace.pk)
    assert admin_client.get(url).status_code == 200

    response = admin_client.post(url, {"amount": "250", "note": "top-up"}, follow=True)

    assert response.redirect_chain[-1][0] == admin_url(Workspace, "change", workspace.pk)
    assert "the balance is now 350" in response.content.decode()
    workspace.refresh_from_db()
    assert workspace.credit_balance == 350
    entry = UsageLedgerEntry.objects.filter(workspace=workspace).order_by("-balance_after").first()
    assert (entry.kind, entry.delta, entry.balance_after) == ("GRANT", 250, 350)
    assert entry.note == f"top-up (by {admin_user.username})"


def test_grant_credits_form_removes_credits_as_an_adjustment_but_not_below_the_reserved(admin_client, workspace):
    url = admin_url(Workspace, "grant_credits", workspace.pk)
    admin_client.post(url, {"amount": "-30"})
    workspace.refresh_from_db()
    assert workspace.credit_balance == 70
    assert UsageLedgerEntry.objects.filter(workspace=workspace, kind="ADJUSTMENT", delta=-30).exists()

    Workspace.objects.filter(pk=workspace.pk).update(credit_reserved=50)
    response = admin_client.post(url, {"amount": "-30"})
    assert response.status_code == 200 and "does not have that many credits" in response.content.decode()
    for bad in ("0", "abc", "", str(10**13)):
        assert admin_client.post(url, {"amount": bad}).status_code == 200  # the form again, with the error
    workspace.refresh_from_db()
    assert workspace.credit_balance == 70
    assert UsageLedgerEntry.objects.filter(workspace=workspace).count() == 2


def test_grant_credits_needs_the_change_permission(client, workspace):
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_workspace"))
    client.force_login(viewer)
    assert client.get(admin_url(Workspace, "change", workspace.pk)).status_code == 200
    assert client.post(admin_url(Workspace, "grant_credits", workspace.pk), {"amount": "5"}).status_code == 403
    workspace.refresh_from_db()
    assert workspace.credit_balance == 100


# --- configuration: channels and agents -------------------------------------------------------------------


def test_channel_refuses_an_agent_of_another_workspace(admin_client, workspace):
    foreign_agent = AIAgentFactory(workspace=WorkspaceFactory())
    own_agent = AIAgentFactory(workspace=workspace)
    data = {"workspace": workspace.pk, "name": "Support", "type": "API", "is_active": "on"}

    refused = admin_client.post(admin_url(Channel, "add"), {**data, "agent": foreign_agent.pk})
    assert refused.status_code == 200 and not Channel.objects.filter(name="Support").exists()

    added = admin_client.post(admin_url(Channel, "add"), {**data, "agent": own_agent.pk})
    assert added.status_code == 302
    channel = Channel.objects.get(name="Support")
    assert channel.agent == own_agent

    # on the change page the workspace is fixed and only its agents are offered
    page = admin_client.get(admin_url(Channel, "change", channel.pk)).content.decode()
    assert 'name="workspace"' not in page and own_agent.pk in page and foreign_agent.pk not in page
    assert admin_client.post(admin_url(Channel, "delete", channel.pk), {"post": "yes"}).status_code == 403


def test_teams_are_added_and_a_channel_takes_only_a_team_of_its_workspace(admin_client, workspace, channel):
    # a team is added in the admin, with an id like the others
    added = admin_client.post(admin_url(Team, "add"), {"workspace": workspace.pk, "name": "Support"})
    assert added.status_code == 302
    team = Team.objects.get(name="Support")
    assert team.pk.startswith("team_") and team.workspace == workspace
    foreign = Team.objects.create(workspace=WorkspaceFactory(), name="Elsewhere")

    # the channel's page offers its workspace's teams only, and refuses another workspace's
    url = admin_url(Channel, "change", channel.pk)
    page = admin_client.get(url).content.decode()
    assert team.pk in page and foreign.pk not in page
    data = {"name": channel.name, "type": "API", "is_active": "on", "agent": channel.agent_id}
    assert admin_client.post(url, {**data, "team": foreign.pk}).status_code == 200  # the form again
    assert Channel.objects.get(pk=channel.pk).team is None
    assert admin_client.post(url, {**data, "team": team.pk}).status_code == 302
    assert Channel.objects.get(pk=channel.pk).team == team

    # an add form that mixes workspaces is refused by the model's own check
    refused = admin_client.post(
        admin_url(Channel, "add"),
        {"workspace": workspace.pk, "name": "Mixed", "type": "API", "is_active": "on", "team": foreign.pk},
    )
    assert refused.status_code == 200 and "Choose a team of the workspace" in refused.content.decode()
    assert not Channel.objects.filter(name="Mixed").exists()

    # the team's page links to its channels; on the change page the workspace is fixed
    team_page = admin_client.get(admin_url(Team, "change", team.pk)).content.decode()
    assert f"team__id__exact={team.pk}" in team_page and 'name="workspace"' not in team_page


def test_a_workspaces_related_links_filter_by_its_id(admin_client, workspace, channel):
    other = ChannelFactory()
    page = admin_client.get(admin_url(Workspace, "change", workspace.pk)).content.decode()
    link = re.search(r'href="([^"]+)">Channels</a>', main_content(page))[1].replace("&amp;", "&")

    listing = admin_client.get(link).content.decode()

    assert admin_url(Channel, "change", channel.pk) in listing
    assert admin_url(Channel, "change", other.pk) not in listing


def test_a_channels_team_and_agent_are_checked_by_the_model(workspace):
    from django.core.exceptions import ValidationError

    channel = Channel(
        workspace=workspace,
        name="x",
        agent=AIAgentFactory(workspace=WorkspaceFactory()),
        team=Team.objects.create(workspace=WorkspaceFactory(), name="t"),
    )
    with pytest.raises(ValidationError) as caught:
        channel.full_clean()
    assert set(caught.value.message_dict) == {"agent", "team"}


def test_agent_is_edited_with_its_knowledge_settings(admin_client, channel):
    agent = channel.agent
    data = {
        "name": "Support agent",
        "instructions": "Be brief.",
        "provider": "builtin",
        "model": "",
        "base_url": "",
        "api_key_env_var": "",
        "temperature": "",
        "max_output_tokens": "",
        "timeout_seconds": "60",
        "greeting_text": "Hi!",
        "fallback_text": "Sorry.",
        "split_threshold_chars": "600",
        "history_max_messages": "20",
        "history_max_chars": "12000",
        "credit_cost_per_reply": "2",
        "credit_cost_per_1k_tokens": "0",
        "knowledge_language": "english",
        "knowledge_max_passages": "3",
        "knowledge_max_chars": "4000",
        "embedding_model": "",
    }

    response = admin_client.post(admin_url(AIAgent, "change", agent.pk), data)

    assert response.status_code == 302, response.content.decode()[:2000]
    agent.refresh_from_db()
    assert (agent.name, agent.credit_cost_per_reply, agent.knowledge_max_passages) == ("Support agent", 2, 3)
    assert (agent.knowledge_documents, agent.knowledge_passages) == (2, 2)  # the counters are not the form's


def test_a_document_is_added_replaced_shown_and_deleted_in_the_admin(admin_client, channel):
    agent = channel.agent
    add = {"agent": agent.pk, "key": "warranty", "title": "Warranty", "text": "# Terms\n\nTwo years on every part."}
    response = admin_client.post(admin_url(Document, "add"), add)
    assert response.status_code == 302, response.content.decode()[:2000]
    document = Document.objects.get(agent=agent, key="warranty")
    assert (document.status, document.chunks) == ("READY", 1)
    assert [(p.heading, p.text) for p in document.passages.all()] == [("Terms", "Two years on every part.")]

    # a file uploaded replaces the text; the change page shows the passages
    upload = SimpleUploadedFile("w.md", b"# Terms\n\nThree years.\n\n# Returns\n\nWithin 30 days.")
    change = {"title": "Warranty", "text": "", "upload": upload, "passages-TOTAL_FORMS": "0"}
    change |= {"passages-INITIAL_FORMS": "0", "passages-MIN_NUM_FORMS": "0", "passages-MAX_NUM_FORMS": "1000"}
    response = admin_client.post(admin_url(Document, "change", document.pk), change)
    assert response.status_code == 302, response.content.decode()[:2000]
    document.refresh_from_db()
    assert [p.text for p in document.passages.all()] == ["Three years.", "Within 30 days."]
    page = admin_client.get(admin_url(Document, "change", document.pk)).content.decode()
    assert "Within 30 days." in page and "Returns" in page
    agent.refresh_from_db()
    assert (agent.knowledge_documents, agent.knowledge_passages) == (3, 4)

    response = admin_client.post(admin_url(Document, "delete", document.pk), {"post": "yes"})
    assert response.status_code == 302
    assert not Document.objects.filter(pk=document.pk).exists()
    agent.refresh_from_db()
    assert (agent.knowledge_documents, agent.knowledge_passages) == (2, 2)


# --- configuration: API keys ------------------------------------------------------------------------------


def test_api_key_created_in_the_admin_shows_its_secret_once(admin_client, workspace):
    response = admin_client.post(
        admin_url(WorkspaceApiKey, "add"),
        {"workspace": workspace.pk, "name": "ops", "expiry_date_0": "", "expiry_date_1": ""},
        follow=True,
    )

    assert response.status_code == 200
    api_key = WorkspaceApiKey.objects.get(name="ops")
    shown = [str(m) for m in response.context["messages"]]
    assert len(shown) == 1 and "shown only this once" in shown[0]
    key = re.search(rf"{api_key.prefix}\.\w+", shown[0])[0]
    assert api_key.is_valid(key)
    # ... and never again
    page = admin_client.get(admin_url(WorkspaceApiKey, "change", api_key.prefix)).content.decode()
    assert key not in page


def test_the_new_api_keys_secret_never_travels_in_a_cookie(admin_client, rf, workspace):
    """Django's default message storage keeps messages in a signed (readable, not encrypted) cookie; the
    one-time secret stays on the server, in the session, and only the page that shows it carries it."""
    response = admin_client.post(
        admin_url(WorkspaceApiKey, "add"),
        {"workspace": workspace.pk, "name": "ops", "expiry_date_0": "", "expiry_date_1": ""},
    )
    assert response.status_code == 302
    api_key = WorkspaceApiKey.objects.get(name="ops")
    shown = admin_client.get(response["Location"])
    (message,) = [str(message) for message in shown.context["messages"]]
    key = re.search(rf"{api_key.prefix}\.\w+", message)[0]
    assert api_key.is_valid(key)
    secret = key.split(".")[1]

    for page in (response, shown):
        for morsel in page.cookies.values():
            decoded = CookieStorage(rf.get("/"))._decode(morsel.value)  # None unless it is a messages cookie
            assert secret not in morsel.value and secret not in str(decoded or ""), morsel.key
        assert "messages" not in page.cookies or not page.cookies["messages"].value


def test_api_key_pages_never_show_the_secret_or_its_hash(admin_client, workspace):
    api_key, key = api_key_for(workspace, name="ops")
    secret = key.split(".")[1]
    listing = admin_client.get(admin_url(WorkspaceApiKey, "changelist")).content.decode()
    change_url = admin_url(WorkspaceApiKey, "change", api_key.prefix)
    assert change_url in listing
    for column in ("ops", api_key.prefix, workspace.name):
        assert column in listing

    # revoke it on its page (the admin log names it by prefix too)
    response = admin_client.post(change_url, {"name": "ops", "expiry_date_0": "", "expiry_date_1": "", "revoked": "on"})
    assert response.status_code == 302
    assert WorkspaceApiKey.objects.get(pk=api_key.pk).revoked

    pages = [
        listing,
        admin_client.get(change_url).content.decode(),
        admin_client.get(admin_url(WorkspaceApiKey, "history", api_key.prefix)).content.decode(),
        admin_client.get(reverse("admin:index")).content.decode(),
    ]
    assert "ops" in pages[2]  # the history lists the change
    for page in pages:
        assert secret not in page and api_key.hashed_key not in page
        assert api_key.hashed_key.split("$")[-1] not in page


def test_api_key_page_fields(admin_client, workspace):
    api_key, _ = api_key_for(workspace, name="ops")
    page = admin_client.get(admin_url(WorkspaceApiKey, "change", api_key.prefix)).content.decode()
    for label in ("Workspace", "Name", "Prefix", "Created", "Last used at", "Expires", "Revoked"):
        assert label in page
    assert 'name="workspace"' not in page  # a key stays in its workspace
    assert "deletelink" not in page
    assert admin_client.post(admin_url(WorkspaceApiKey, "delete", api_key.prefix), {"post": "yes"}).status_code == 403


def test_the_librarys_unused_api_key_model_is_not_in_the_admin():
    assert not admin.site.is_registered(APIKey)
    assert admin.site.is_registered(WorkspaceApiKey)


# --- every admin page: input the database cannot hold ----------------------------------------------------


@pytest.mark.parametrize("model", list(admin.site._registry), ids=lambda model: model.__name__)
@pytest.mark.parametrize("view", ["change", "history", "delete"])
def test_an_object_id_with_nul_is_400_not_a_500(admin_client, model, view):
    """`%00` in the URL decodes to U+0000, which PostgreSQL refuses even to compare."""
    for object_id in ("\x00", "ws_\x00", "a\x00.b"):
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=[object_id])
        assert "%00" in url

        response = admin_client.get(url)

        # "does not exist" (an integer key, or SQLite finding no row), history's "no deleting" once SQLite
        # has looked, or PostgreSQL's refusal of the NUL as a 400: never a 500
        assert response.status_code in (302, 400, 403), (object_id, response.status_code)
        if response.status_code == 302:
            assert response["Location"] == reverse("admin:index")
        if response.status_code == 400:
            assert error_of(response)["details"] == {"request": "contains U+0000 (NUL)"}


@pytest.mark.parametrize(
    "url",
    [
        "/admin/channels_app/channel/?agent__id__exact=%00",
        "/admin/conversations/message/?conversation__id__exact=%00",
        "/admin/autocomplete/?term=%00&app_label=channels_app&model_name=channel&field_name=agent",
    ],
)
def test_a_list_filter_or_search_with_nul_is_not_a_500(admin_client, url):
    response = admin_client.get(url)

    assert response.status_code in (200, 400), response.status_code
    if response.status_code == 400:
        assert error_of(response)["code"] == "invalid_request"
