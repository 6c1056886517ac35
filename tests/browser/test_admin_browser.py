"""The back office in a real browser: headless Debian Chromium (never a downloaded one) driven by Playwright
against pytest-django's live server. Screenshots go to test-output/ (gitignored).

Playwright's sync API runs an asyncio event loop in the test's thread while it is started, so the test
makes its rows first and touches no database while the browser runs. The usual work-around,
DJANGO_ALLOW_ASYNC_UNSAFE=true, only silences Django's check: ORM calls under that loop run in another
context (asgiref's Local) on a connection nobody closes, and on PostgreSQL that session then blocks dropping
the test database. Without it, an ORM call slipped into the browser block fails at once
(SynchronousOnlyOperation) instead of leaking.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.admin.utils import quote
from django.contrib.auth.models import User
from django.utils import timezone

from tests.factories import ChannelFactory, WorkspaceFactory
from tests.history import IMAGE_URL, conversation_with_exchanges
from webhooks.models import WebhookDelivery, WebhookEvent

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = Path(settings.BASE_DIR) / "test-output"
PASSWORD = "operator-password-for-tests"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium chromium-driver; .ci/run does)",
)


@pytest.fixture
def chromium_page():
    sync_api = pytest.importorskip("playwright.sync_api")

    @contextmanager
    def start(viewport: dict[str, int] | None = None) -> Iterator:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport=viewport or {"width": 1280, "height": 900})
                page.set_default_timeout(15_000)
                yield page
            finally:
                browser.close()

    return start


def test_operator_reads_a_transcript_and_cannot_change_history(live_server, chromium_page):
    # given: an operator and a conversation with a text and an image exchange
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    channel = ChannelFactory(workspace=WorkspaceFactory(name="Acme shop"), name="Support API")
    history = conversation_with_exchanges(channel=channel)
    conversation_id, contact_id = history.conversation.pk, history.contact.pk
    image_message_id = history.messages[3].pk
    admin = f"{live_server.url}/admin"

    with chromium_page() as page:
        # when: they log in and open the conversation
        page.goto(f"{admin}/login/?next=/admin/")
        page.fill("#id_username", "operator")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_selector("#site-name")
        page.goto(f"{admin}/conversations/conversation/")
        page.click("#result_list >> text=ada@example.com (Ada Lovelace)")  # the list names the contact
        page.wait_for_selector("#transcript")
        assert quote(conversation_id) in page.url

        # then: the transcript reads like a chat, in order
        messages = page.locator("#transcript li.message")
        assert messages.count() == 6
        assert messages.nth(0).get_attribute("class") == "message from-contact"
        assert "Can I get a refund?" in messages.nth(0).inner_text()
        assert "Yes, within 30 days of purchase." in messages.nth(1).inner_text()
        assert "1 credit" in messages.nth(1).inner_text()
        image = messages.nth(3)
        assert image.get_attribute("data-type") == "IMAGE" and "My receipt" in image.inner_text()
        assert image.locator(f'a[href="{IMAGE_URL}"]').is_visible()
        assert "image/png, 47.1 KB" in image.inner_text().replace("\xa0", " ")
        assert "2 credits" in messages.nth(4).inner_text()
        assert "Not answered: agent_timeout" in messages.nth(5).inner_text()
        # the contact's bubbles sit left of the agent's
        assert messages.nth(0).bounding_box()["x"] < messages.nth(1).bounding_box()["x"]

        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "admin-conversation-transcript.png"), full_page=True)

        # and: no add, save or delete control on the history pages
        edit_controls = (
            "a.addlink, a.deletelink, input[name=_save], input[name=_continue], "
            "input[name=_addanother], select[name=action]"
        )
        assert page.locator(f"#content-main {edit_controls}").count() == 0
        message_page = f"{admin}/conversations/message/{quote(image_message_id)}/change/"
        for url in (
            f"{admin}/conversations/conversation/",
            f"{admin}/conversations/message/",
            message_page,
            f"{admin}/contacts/contact/",
            f"{admin}/contacts/contact/{quote(contact_id)}/change/",
            f"{admin}/conversations/mediaasset/",
            f"{admin}/billing/usageledgerentry/",
            f"{admin}/api/idempotencyrecord/",
        ):
            page.goto(url)
            page.wait_for_selector("#content-main")
            if url.endswith("/conversations/conversation/"):
                # the one action on history: closing conversations (tests/api/test_conversation_close_admin.py)
                actions = page.locator("#content-main select[name=action] option").all_inner_texts()
                assert actions[1:] == ["Close the selected conversations"], actions
                controls = edit_controls.replace(", select[name=action]", "")
                assert page.locator(f"#content-main {controls}").count() == 0, url
                continue
            assert page.locator(f"#content-main {edit_controls}").count() == 0, url
        assert page.goto(f"{admin}/conversations/conversation/add/").status == 403


# The lists an operator reads most, each with rows of realistic width (long identifiers and names, ids,
# times, a failure).
WIDE_LISTS = (
    "/conversations/message/",
    "/conversations/conversation/",
    "/contacts/contact/",
    "/webhooks/webhookdelivery/",
)


def _wide_rows() -> None:
    """A conversation whose contact has a long address and name, and a failed webhook delivery."""
    channel = ChannelFactory.create(
        workspace=WorkspaceFactory.create(name="Acme shop international"), name="Support API EU"
    )
    conversation_with_exchanges(channel=channel, identifier="customer.support.escalations@example-company.com")
    conversation_with_exchanges(channel=channel, identifier="+44 (20) 7946-0958")
    event = WebhookEvent.objects.create(
        workspace=channel.workspace,
        channel=channel,
        type=WebhookEvent.Type.MESSAGE_REPLIED,
        payload="{}",
        created_at=timezone.now(),
    )
    WebhookDelivery.objects.create(
        event=event,
        status=WebhookDelivery.Status.FAILED,
        attempts=8,
        last_status_code=503,
        last_outcome="http_status",
        next_attempt_at=timezone.now(),
    )


def test_the_history_lists_fit_1400_px_with_the_navigation_sidebar_open(live_server, chromium_page):
    # given: an operator and rows of realistic width
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    _wide_rows()
    admin = f"{live_server.url}/admin"

    with chromium_page(viewport={"width": 1400, "height": 1000}) as page:
        refused: list[str] = []  # nothing the pages load answers 4xx: not the favicon either
        page.on("response", lambda response: refused.append(response.url) if response.status >= 400 else None)
        page.goto(f"{admin}/login/?next=/admin/")
        page.fill("#id_username", "operator")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_selector("#site-name")
        OUTPUT.mkdir(exist_ok=True)
        for path in WIDE_LISTS:
            # when: they open each list, the navigation sidebar open (Django's default)
            page.goto(f"{admin}{path}")
            page.wait_for_selector("#result_list tbody tr")
            assert page.locator("#nav-sidebar").is_visible(), path
            page.screenshot(path=str(OUTPUT / f"admin-list-{path.strip('/').replace('/', '-')}.png"))

            # then: the table fits its box: nothing scrolls sideways, every column is on screen
            widths = page.evaluate(
                "() => { const box = document.querySelector('#changelist .results');"
                " return [box.scrollWidth, box.clientWidth, document.documentElement.scrollWidth,"
                " window.innerWidth]; }"
            )
            table, box, document, window = widths
            assert table <= box and document <= window, f"{path}: table {table} px in {box} px; page {document}"
            last_header = page.locator("#result_list thead th").last
            right = last_header.bounding_box()
            assert right["x"] + right["width"] <= window, path
        assert page.evaluate("async () => (await fetch('/favicon.ico')).status") == 204
        assert refused == []
