"""Concurrent answers and failures on one channel feed the same rollup rows (PostgreSQL): every outcome is
counted once, and the day's credits equal the ledger's."""

import pytest
from django.db.models import Sum

from analytics.models import MessageDay
from billing.models import UsageLedgerEntry
from tests.concurrency.conftest import run_together
from tests.conftest import SEED_TEXT

pytestmark = pytest.mark.django_db(transaction=True)

REQUESTS = 40


def test_concurrent_outcomes_of_one_channel_are_each_counted_once(race_channel_factory, scripted_agent):
    # given: credits for all; every fourth message is an image refused for its private address
    channel, key = race_channel_factory(credits=REQUESTS)
    scripted_agent.take_over(channel.agent).delay = 0.02

    def post(index, api):
        if index % 4 == 0:
            image = {"image": {"url": f"http://10.0.0.{index}/x.png"}}
            return api.post({**SEED_TEXT, "type": "IMAGE", "content": image, "contactIdentifier": f"c{index}@x.test"})
        return api.post({**SEED_TEXT, "contactIdentifier": f"c{index}@x.test"})

    # when
    responses = run_together(REQUESTS, post, channel=channel, key=key)

    # then
    statuses = [response.status_code for response in responses]
    assert (statuses.count(200), statuses.count(400)) == (REQUESTS * 3 // 4, REQUESTS // 4)
    rows = {row.error_code: row for row in MessageDay.objects.filter(channel=channel)}
    assert set(rows) == {"", "media_url_not_allowed"}
    assert (rows[""].messages, rows["media_url_not_allowed"].messages) == (REQUESTS * 3 // 4, REQUESTS // 4)
    charged = -UsageLedgerEntry.objects.filter(kind="CHARGE").aggregate(total=Sum("delta"))["total"]
    assert rows[""].credits == charged == REQUESTS * 3 // 4
