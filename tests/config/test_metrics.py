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
