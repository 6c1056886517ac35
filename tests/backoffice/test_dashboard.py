"""The dashboard on the admin index: its numbers against the ledger and the messages, its range and workspace
filter, who sees it, and its query count."""

import re
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from analytics.models import LATENCY_BUCKETS_MS, LATENCY_FIELDS, MessageDay
from backoffice.dashboard import DASHBOARD_MAX_DAYS, DateRange, dashboard_get, dashboard_range, percentile_ms
from billing.models import UsageLedgerEntry
from conversations.failures import failure_cause
from conversations.models import Conversation, Message
from tests.backoffice.seed import message_stats_answered, seed_days
from tests.factories import ChannelFactory, WorkspaceFactory

DASHBOARD_QUERIES = 8  # session, user, the 5 of backoffice/dashboard.py (labels too), recent actions


@pytest.fixture
def seeded(db, client, httpserver):
    return seed_days(client=client, httpserver=httpserver, today=timezone.now().date(), days=5)


def index(client, **params):
    response = client.get("/admin/", params)
    assert response.status_code == 200
    return response.content.decode()


def table_rows(html: str, panel: str) -> dict[str, dict[str, str]]:
    """A panel's numbers table: {row key: {cell class: text}}."""
    section = html.split(f'id="{panel}"')[1].split("</section>")[0]
    found = {}
    for key, cells in re.findall(r'<tr data-(?:day|code|channel)="([^"]+)">(.*?)</tr>', section, flags=re.S):
        found[key] = dict(re.findall(r'<td class="([^"]+)">(?:<[^>]+>)*([^<]*)', cells))
    return found


def ledger_by_day(workspace=None) -> tuple[Counter[str], Counter[str]]:
    """(charges per UTC day, credits per UTC day) from the usage ledger."""
    charges: Counter[str] = Counter()
    credits: Counter[str] = Counter()
    entries = UsageLedgerEntry.objects.filter(kind=UsageLedgerEntry.Kind.CHARGE)
    if workspace is not None:
        entries = entries.filter(workspace=workspace)
    for created_at, delta in entries.values_list("created_at", "delta"):
        day = created_at.astimezone(UTC).date().isoformat()
        charges[day] += 1
        credits[day] += -delta
    return charges, credits


def test_the_dashboard_numbers_are_the_ledger_and_the_messages(admin_client, seeded):
    # when
    html = index(admin_client, **{"from": str(seeded.days[0]), "to": str(seeded.days[-1])})

    # then: credits per day are the ledger's charges; answered messages are the ledger's charges (every
    # answer costs at least one credit)
    charges, credits = ledger_by_day()
    credit_rows = table_rows(html, "chart-credits")
    message_rows = table_rows(html, "chart-messages")
    for day in seeded.days:
        key = day.isoformat()
        assert int(credit_rows[key]["credits"]) == credits[key] > 0
        assert int(message_rows[key]["answered"]) == charges[key]

    # and the failures by cause are the FAILED messages of each day
    failed = defaultdict(Counter)
    for message in Message.objects.filter(status=Message.Status.FAILED):
        failed[message.created_at.astimezone(UTC).date().isoformat()][failure_cause(message.error_code).key] += 1
    for day in seeded.days:
        key = day.isoformat()
        shown = {
            cls.removeprefix("failed-"): int(n) for cls, n in message_rows[key].items() if cls.startswith("failed-")
        }
        assert {cause: n for cause, n in shown.items() if n} == dict(failed[key])
    assert set(failed[seeded.days[0].isoformat()]) == {"media", "agent", "abandoned"}
    assert set(failed[seeded.days[1].isoformat()]) == {"media"}
    assert set(failed[seeded.days[-1].isoformat()]) == {"media", "agent", "abandoned", "timeout"}

    # and by error code, with links to the list of those messages
    codes = Counter(Message.objects.filter(status=Message.Status.FAILED).values_list("error_code", flat=True))
    assert {code: int(cells["count"]) for code, cells in table_rows(html, "chart-failures").items()} == dict(codes)
    assert "?status__exact=FAILED&amp;error_code=agent_timeout" in html

    # and the totals, the busiest channel first, the active conversations
    assert re.search(r'id="total-credits">([\d,]+)<', html).group(1) == f"{sum(credits.values()):,}"
    busiest = list(table_rows(html, "chart-channels"))
    assert busiest[0] == seeded.support.pk and set(busiest) == {seeded.support.pk, seeded.sales.pk, seeded.helpdesk.pk}
    active = Conversation.objects.filter(status=Conversation.Status.ACTIVE).count()
    assert re.search(r'id="active-conversations">(\d+)<', html).group(1) == str(active)

    # and the charts carry the same numbers in their SVG titles, drawn on the server: no script, no CDN
    charts = re.findall(r"<svg [^>]*class=\"pygal-chart\".*?</svg>", html, flags=re.S)
    assert len(charts) == 5
    assert f"<title>{seeded.days[0]}: {credits[seeded.days[0].isoformat()]} credits</title>" in html
    assert f"<title>{seeded.days[-1]}: answered {charges[seeded.days[-1].isoformat()]}</title>" in html
    for svg in charts:
        assert "<script" not in svg and 'href="http' not in svg and "kozea.github.io" not in svg


def test_one_workspace_shows_only_its_numbers(admin_client, seeded):
    html = index(
        admin_client, **{"from": str(seeded.days[0]), "to": str(seeded.days[-1]), "workspace": seeded.globex.pk}
    )

    charges, credits = ledger_by_day(seeded.globex)
    credit_rows = table_rows(html, "chart-credits")
    assert {day: int(cells["credits"]) for day, cells in credit_rows.items() if int(cells["credits"])} == dict(credits)
    assert list(table_rows(html, "chart-channels")) == [seeded.helpdesk.pk]
    assert "No failures in this range." in html
    assert f'<option value="{seeded.globex.pk}" selected>' in html


def test_the_default_range_is_the_last_thirty_days_and_a_bad_one_says_why(admin_client, seeded):
    today = timezone.now().date()
    html = index(admin_client)
    assert f'data-from="{today - timedelta(days=29)}" data-to="{today}"' in html
    assert len(table_rows(html, "chart-credits")) == 30

    for params, says in (
        ({"from": "25/11/2026"}, "must look like 2026-11-25"),
        ({"from": str(today), "to": str(today - timedelta(days=1))}, "starts after it ends"),
        ({"from": str(today - timedelta(days=DASHBOARD_MAX_DAYS)), "to": str(today)}, "longer than 366 days"),
    ):
        html = index(admin_client, **params)
        assert says in html and f'data-from="{today - timedelta(days=29)}"' in html


def test_range_parsing():
    today = date(2026, 11, 25)
    assert dashboard_range(params={}, today=today) == DateRange(date(2026, 10, 27), today)
    assert dashboard_range(params={"from": "2026-11-01", "to": "2026-11-03"}, today=today).days == [
        date(2026, 11, 1),
        date(2026, 11, 2),
        date(2026, 11, 3),
    ]
    assert dashboard_range(params={"to": "2026-11-10"}, today=today).start == date(2026, 10, 12)
    year = dashboard_range(params={"from": "2025-11-26", "to": "2026-11-25"}, today=today)
    assert len(year.days) == DASHBOARD_MAX_DAYS - 1 and not year.error


def test_percentiles_come_from_the_histogram():
    counts = [0] * len(LATENCY_FIELDS)
    assert percentile_ms(counts, 0.5) is None
    counts[LATENCY_BUCKETS_MS.index(1_000)] = 10  # ten answers in (750, 1000] ms
    assert percentile_ms(counts, 0.5) == pytest.approx(875)
    counts[-1] = 90  # ninety over 60 s: the open bucket answers its lower bound
    assert percentile_ms(counts, 0.95) == 60_000
    assert percentile_ms(counts, 0.05) == pytest.approx(750 + 250 * 0.5)


def test_p50_and_p95_per_day(channel):
    day = datetime(2026, 3, 2, 12, tzinfo=UTC)
    for index in range(100):  # 1..100 ms: p50 about 50 ms, p95 about 95 ms (bucket precision)
        message_stats_answered(
            workspace_id=channel.workspace_id,
            channel_id=channel.pk,
            at=day,
            replies=1,
            credits=1,
            input_tokens=0,
            output_tokens=0,
            agent_seconds=(index + 1) / 1000,
        )
    dashboard = dashboard_get(date_range=DateRange(day.date(), day.date()))
    (only,) = dashboard.days
    assert 25 <= only.p50_ms <= 50 and 50 < only.p95_ms <= 100
    assert (only.answered, only.credits) == (100, 100)


def test_a_staff_user_without_the_message_view_permission_gets_the_plain_index(client, seeded):
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    client.force_login(user)
    assert 'id="dashboard"' not in index(client)

    user.user_permissions.add(Permission.objects.get(codename="view_message"))
    html = index(client)
    assert 'id="dashboard"' in html
    assert "ledger-export-csv" not in html  # the ledger export needs the ledger's view permission


def test_view_site_leads_to_the_api_docs(admin_client, db):
    html = index(admin_client)
    assert re.search(r'<a href="/api/docs/">View site</a>', html)


def test_dashboard_query_count_is_pinned_and_does_not_grow(admin_client, seeded, django_assert_max_num_queries):
    with django_assert_max_num_queries(DASHBOARD_QUERIES):
        index(admin_client)

    # more channels, workspaces and days of rows change nothing
    for n in range(20):
        channel = ChannelFactory(workspace=WorkspaceFactory())
        MessageDay.objects.bulk_create(
            [
                MessageDay(
                    day=timezone.now().date() - timedelta(days=offset),
                    workspace_id=channel.workspace_id,
                    channel=channel,
                    error_code=code,
                    messages=n + 1,
                )
                for offset in range(30)
                for code in ("", "agent_timeout")
            ]
        )
    with django_assert_max_num_queries(DASHBOARD_QUERIES):
        html = index(admin_client, workspace="")
    assert len(table_rows(html, "chart-channels")) == 10


def test_dashboard_of_an_empty_database(admin_client, db):
    html = index(admin_client)
    assert "No messages in this range" in html and 'id="total-messages">0<' in html


def test_conversations_by_label_counts_the_ranges_labelled_conversations_and_links_to_them(admin_client):
    from contacts.services import contact_create
    from conversations.models import Conversation

    channel = ChannelFactory()
    now = timezone.now()
    for number, labels in enumerate((["vip", "billing"], ["vip"], [])):
        Conversation.objects.create(
            workspace=channel.workspace,
            channel=channel,
            contact=contact_create(workspace_id=channel.workspace_id, identifier=f"c{number}@example.com", name=""),
            status=Conversation.Status.CLOSED,
            labels=labels,
            last_message_at=now,
        )

    page = index(admin_client)

    panel = page.split('id="conversations-by-label"', 1)[1].split("</section>", 1)[0]
    assert '<tr data-label="vip">' in panel and '<tr data-label="billing">' in panel
    assert panel.index('data-label="vip"') < panel.index('data-label="billing"')  # most first
    assert "?label=vip" in panel
    listed = admin_client.get("/admin/conversations/conversation/", {"label": "vip"})
    assert listed.status_code == 200 and listed.context["cl"].result_count == 2
