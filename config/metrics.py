"""Our Prometheus metrics, beside django-prometheus's request, response and database metrics at /metrics.

Every app may call these functions (they live in `config` because imports between the apps point one way).
Labels stay few and bounded: no workspace, channel or contact ids (one series each would explode the
time series count); the logs carry those.

Under gunicorn with several processes, `config/gunicorn.py` sets PROMETHEUS_MULTIPROC_DIR so /metrics adds
up every process, whichever one answers the scrape.
"""

from __future__ import annotations

from django_prometheus.middleware import PrometheusAfterMiddleware as _PrometheusAfterMiddleware
from prometheus_client import Counter, Histogram

# RFC 9110's methods and PATCH; any other method a client makes up is counted as "other".
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
OTHER_METHOD = "other"

messages_total = Counter(
    "channels_messages_total",
    "Requests to the messages endpoint, by the message's type (`unknown` when the body was not read or "
    "named no valid type) and the HTTP status answered.",
    ["type", "status"],
)
agent_seconds = Histogram(
    "channels_agent_seconds",
    "Time the AI agent took to reply, by provider, for replies that arrived.",
    ["provider"],
    # A built-in reply takes milliseconds; an LLM's seconds; the agent's timeout is 60 s by default.
    buckets=(0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
)
media_download_bytes = Histogram(
    "channels_media_download_bytes",
    "Size of downloaded media files, by outcome (`ok` or the media error's code).",
    ["outcome"],
    # Powers of 4 from 1 KiB up to the spec's 10 MB limit.
    buckets=(1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 10485760),
)
media_download_seconds = Histogram(
    "channels_media_download_seconds",
    "Time spent downloading a media file, by outcome (`ok` or the media error's code).",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30),  # the spec's download timeout is 30 s
)
credits_spent_total = Counter(
    "channels_credits_spent_total",
    "Credits charged to workspaces for agent replies.",
)


def message_observe(*, type: str | None, status: int) -> None:
    """`type` is one of the message types (conversations.models.Message.Type) or None (`unknown`): the
    caller checks it, so a made-up type never becomes a label of its own."""
    messages_total.labels(type=type or "unknown", status=str(status)).inc()


def agent_latency_observe(*, provider: str, seconds: float) -> None:
    agent_seconds.labels(provider=provider or "unknown").observe(seconds)


def media_download_observe(size: int, seconds: float, outcome: str = "ok") -> None:
    """Call once per download attempt: `size` in bytes received (0 when nothing arrived), `seconds` from the
    start of resolution to the last byte or the failure, `outcome` "ok" or the media error's `code`."""
    media_download_bytes.labels(outcome=outcome).observe(max(0, size))
    media_download_seconds.labels(outcome=outcome).observe(max(0.0, seconds))


def credits_spent_observe(amount: int) -> None:
    if amount > 0:
        credits_spent_total.inc(amount)


class PrometheusAfterMiddleware(_PrometheusAfterMiddleware):
    """django-prometheus's, with the `method` label bounded in every metric. The library counts an unknown
    method as "<invalid method>" in most of them but labels its latency histogram
    (`django_http_requests_latency_seconds_by_view_method`, about 2.4 KB a series) with the method as sent,
    and gunicorn passes any upper-case token: each made-up method (`FOOBAR /api/...`) would add a series
    for the life of the process. The other labels are bounded already: `view` is a URL pattern's name,
    `status` a code we answer, `templatename` and `type` (of an exception) are ours."""

    def label_metric(self, metric, request, response=None, **labels):
        if "method" in labels and labels["method"] not in HTTP_METHODS:
            labels["method"] = OTHER_METHOD
        return super().label_metric(metric, request, response, **labels)
