"""Prometheus metrics at /metrics: django-prometheus's and ours (messages, agent latency, media, credits)."""

from prometheus_client import REGISTRY

from config.metrics import media_download_observe
from tests.conftest import SEED_TEXT


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_message_counts_by_type_and_status_with_agent_latency_and_credits(api):
    # given
    before = (
        sample("channels_messages_total", type="TEXT", status="200"),
        sample("channels_messages_total", type="unknown", status="401"),
        sample("channels_messages_total", type="STICKER", status="400"),
        sample("channels_messages_total", type="unknown", status="400"),
        sample("channels_agent_seconds_count", provider="builtin"),
        sample("channels_credits_spent_total"),
    )

    # when
    assert api.post(SEED_TEXT).status_code == 200
    assert api.post(SEED_TEXT, key="").status_code == 401
    assert api.post({**SEED_TEXT, "type": "STICKER"}).status_code == 400

    # then: an unknown type is not a label of its own (labels stay bounded)
    after = (
        sample("channels_messages_total", type="TEXT", status="200"),
        sample("channels_messages_total", type="unknown", status="401"),
        sample("channels_messages_total", type="STICKER", status="400"),
        sample("channels_messages_total", type="unknown", status="400"),
        sample("channels_agent_seconds_count", provider="builtin"),
        sample("channels_credits_spent_total"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 0, 1, 1, 1]


def test_media_download_observe_records_size_and_time():
    before = (
        sample("channels_media_download_bytes_count", outcome="ok"),
        sample("channels_media_download_bytes_sum", outcome="ok"),
        sample("channels_media_download_seconds_count", outcome="media_unreachable"),
    )

    media_download_observe(2048, 0.3, "ok")
    media_download_observe(0, 30.0, "media_unreachable")

    after = (
        sample("channels_media_download_bytes_count", outcome="ok"),
        sample("channels_media_download_bytes_sum", outcome="ok"),
        sample("channels_media_download_seconds_count", outcome="media_unreachable"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 2048, 1]


def test_metrics_endpoint_exposes_django_and_our_metrics(api, client):
    api.post(SEED_TEXT)

    response = client.get("/metrics")

    assert response.status_code == 200
    text = response.content.decode()
    assert 'django_http_requests_total_by_method_total{method="POST"}' in text
    assert 'channels_messages_total{status="200",type="TEXT"}' in text
    for name, kind in (
        ("channels_messages_total", "counter"),
        ("channels_agent_seconds", "histogram"),
        ("channels_credits_spent_total", "counter"),
        ("channels_media_download_bytes", "histogram"),
        ("channels_media_download_seconds", "histogram"),
    ):
        assert f"# TYPE {name} {kind}" in text, name


def series_count() -> int:
    return sum(len(family.samples) for family in REGISTRY.collect())


def test_made_up_methods_and_types_leave_the_number_of_series_bounded(api, client):
    """Each label takes a bounded set of values: a method or a message type a client makes up is counted
    under one fixed word, so no request adds a series of its own (each lives as long as the process)."""

    def made_up(index: int):
        # a method gunicorn passes on (an upper-case token) to the API, the admin and an unknown URL
        for path in (f"/api/v1/channels/{api.channel.pk}/messages", "/admin/", "/nowhere"):
            assert client.generic(f"MADEUP{index}", path).status_code < 500
        assert api.post({**SEED_TEXT, "type": f"TYPE{index}"}).status_code == 400
        assert api.post({**SEED_TEXT, "type": {"nested": index}}).status_code == 400

    for index in range(3):  # the first of each kind adds its series once
        made_up(index)
    before = series_count()

    for index in range(3, 40):
        made_up(index)

    assert series_count() == before
    assert sample("django_http_requests_latency_seconds_by_view_method_count", view="<unnamed view>", method="other")
    assert sample("django_http_requests_total_by_method_total", method="other") >= 40 * 3
