"""The operators' view in a real browser (headless Debian Chromium driven by Playwright, as
tests/browser/test_admin_browser.py): the dashboard's charts and numbers against the ledger, the lists at
1400 px, a new key's secret. Screenshots go to test-output/ (gitignored).

As there: every row is made, and every expected number read from the database, before the browser starts;
nothing touches the database while Playwright's event loop runs.
"""

from collections import Counter
from datetime import UTC

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from billing.models import UsageLedgerEntry
from conversations.models import Message
from tests.backoffice.seed import seed_days
from tests.browser.test_admin_browser import CHROMIUM, CHROMIUM_ARGS, OUTPUT, PASSWORD, pytestmark  # noqa: F401

WIDTH = 1400  # the screen: every column an operator reads first must be on it


@pytest.fixture
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api")

    class Started:
        def __enter__(self):
            self.playwright = sync_api.sync_playwright().start()
            self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = self.browser.new_context(viewport={"width": WIDTH, "height": 900})
            page = context.new_page()
            page.set_default_timeout(15_000)
            return page

        def __exit__(self, *exc):
            self.browser.close()
            self.playwright.stop()

    return Started


def log_in(page, base: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")


def cells(page, panel: str, cell: str) -> dict[str, str]:
    """A panel's numbers table, {row key: the text of its cell of class `cell`} (hidden in <details> or not)."""
    return page.eval_on_selector_all(
        f"#{panel} table.numbers tbody tr",
        "(rows, cell) => Object.fromEntries(rows.map(row => [row.dataset.day || row.dataset.code || "
        "row.dataset.channel, (row.querySelector('td.' + cell) || {}).textContent]))",
        cell,
    )


def test_operator_reads_the_dashboard_and_its_numbers_are_the_ledgers(live_server, browser_page, client, httpserver):
    # given: five days of real traffic in two workspaces, and the ledger's numbers per day
    today = timezone.now().date()
    seeded = seed_days(client=client, httpserver=httpserver, today=today, days=5)
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    charges, credits = Counter(), Counter()
    for created_at, delta in UsageLedgerEntry.objects.filter(kind="CHARGE").values_list("created_at", "delta"):
        day = created_at.astimezone(UTC).date().isoformat()
        charges[day] += 1
        credits[day] -= delta
    globex_credits = -sum(
        UsageLedgerEntry.objects.filter(kind="CHARGE", workspace=seeded.globex).values_list("delta", flat=True)
    )
    failed_codes = Counter(Message.objects.filter(status="FAILED").values_list("error_code", flat=True))
    days = [day.isoformat() for day in seeded.days]
    OUTPUT.mkdir(exist_ok=True)

    with browser_page() as page:
        # when: an operator logs in and opens the dashboard for the seeded days
        log_in(page, live_server.url)
        page.goto(f"{live_server.url}/admin/?from={days[0]}&to={days[-1]}")
        page.wait_for_selector("#dashboard svg.pygal-chart")

        # then: five charts drawn on the server, as wide as their panels
        charts = page.locator("#dashboard svg.pygal-chart")
        assert charts.count() == 5
        for index in range(5):
            box, panel = charts.nth(index).bounding_box(), charts.nth(index).locator("xpath=../..").bounding_box()
            assert box["width"] > 0.9 * (panel["width"] - 40), index
        page.screenshot(path=str(OUTPUT / "admin-dashboard.png"), full_page=True)

        # and the numbers beside the charts are the ledger's: credits, and one charge per answered message
        assert {day: int(n) for day, n in cells(page, "chart-credits", "credits").items()} == {
            day: credits[day] for day in days
        }
        assert {day: int(n) for day, n in cells(page, "chart-messages", "answered").items()} == {
            day: charges[day] for day in days
        }
        assert {code: int(n) for code, n in cells(page, "chart-failures", "count").items()} == dict(failed_codes)
        assert page.inner_text("#total-credits") == f"{sum(credits.values()):,}"
        # and the SVG says the same on hover (its <title>s)
        titles = page.eval_on_selector_all("#chart-credits svg title", "nodes => nodes.map(n => n.textContent)")
        assert f"{days[-1]}: {credits[days[-1]]} credits" in titles
        latency = page.eval_on_selector_all("#chart-latency svg title", "nodes => nodes.map(n => n.textContent)")
        assert sum(1 for title in latency if ": p95 " in title) == len(days)

        # when: they narrow it to one workspace with the form
        page.select_option("#dashboard-filter select[name=workspace]", label="Globex")
        page.click("#dashboard-filter input[type=submit]")
        page.wait_for_selector("#dashboard svg.pygal-chart")

        # then
        assert page.inner_text("#total-credits") == f"{globex_credits:,}"
        assert list(cells(page, "chart-channels", "count")) == [seeded.helpdesk.pk]
        page.screenshot(path=str(OUTPUT / "admin-dashboard-one-workspace.png"), full_page=True)

        # and "View site" leads to the API's documentation
        assert page.get_attribute("#user-tools a[href='/api/docs/']", "href") == "/api/docs/"

        # and the history lists show every column inside 1400 px: no header is cut by the list's box
        for url, name in (
            ("/admin/conversations/message/", "admin-messages.png"),
            ("/admin/conversations/conversation/", "admin-conversations.png"),
            ("/admin/billing/usageledgerentry/", "admin-ledger.png"),
            ("/admin/contacts/contact/", "admin-contacts.png"),
        ):
            page.goto(live_server.url + url)
            page.wait_for_selector("#result_list")
            page.screenshot(path=str(OUTPUT / name))
            box = page.locator("#changelist .results").bounding_box()
            headers = page.eval_on_selector_all(
                "#result_list thead th",
                "cells => cells.map(cell => [cell.innerText.trim(), cell.getBoundingClientRect().right])",
            )
            assert len(headers) >= 4, (url, headers)  # contacts: identifier, name, workspace, created
            for header, right in headers:
                assert right <= box["x"] + box["width"] + 1 <= WIDTH, (url, header, right, box)
        assert "Failed: media" in page.goto(f"{live_server.url}/admin/conversations/message/").text()


def test_a_new_keys_secret_is_monospace_with_a_copy_button(live_server, browser_page, workspace):
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    OUTPUT.mkdir(exist_ok=True)

    with browser_page() as page:
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
        log_in(page, live_server.url)
        page.goto(f"{live_server.url}/admin/channels_app/workspaceapikey/add/")
        page.select_option("#id_workspace", value=workspace.pk)
        page.fill("#id_name", "production")
        page.click("input[name=_save]")
        secret = page.locator("ul.messagelist code.api-key-secret")
        secret.wait_for()

        key = secret.inner_text()
        prefix, _, rest = key.partition(".")
        assert len(prefix) == 8 and len(rest) == 32
        font = secret.evaluate("node => getComputedStyle(node).fontFamily")
        assert "mono" in font.lower(), font
        # the same width for every character: I and l, 0 and O take the same room
        widths = secret.evaluate(
            """node => ['IIIIIIII', 'llllllll', 'OOOOOOOO', 'WWWWWWWW'].map(text => {
                 const probe = node.cloneNode(); probe.textContent = text; node.after(probe);
                 const width = probe.getBoundingClientRect().width; probe.remove(); return width; })"""
        )
        assert max(widths) - min(widths) < 1, widths
        page.screenshot(path=str(OUTPUT / "admin-new-api-key.png"))

        page.click("button.copy-secret")
        page.wait_for_selector("button.copy-secret:has-text('Copied')")
        assert page.evaluate("navigator.clipboard.readText()") == key
