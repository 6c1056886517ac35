"""Delivery attempts: claim a due delivery, POST its event signed per Standard Webhooks, record the answer.

Each attempt is three steps, like a message's three phases:
1. Claim (one short transaction): a conditional UPDATE takes the delivery's lease and counts the attempt;
   only one worker can win it. The endpoint's URL and secret are read now, so a new secret signs at once.
2. Send (no transaction, no connection held): through the media download's session and address checks
   (conversations/media/addresses.py; WEBHOOK_ALLOW_PRIVATE_HOSTS instead of MEDIA_ALLOW_PRIVATE_HOSTS), no
   redirect followed, the whole attempt cut at WEBHOOK_TIMEOUT_SECONDS.
3. Record (one short transaction): the attempt row, and the delivery's next step on the retry schedule,
   written only by the lease's owner.
A worker that dies between 1 and 3 leaves a lease that runs out; the next sweep takes the delivery up again
(at least once: the receiver may see an event twice, always with the same `webhook-id`).
"""

import http.client
import math
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import requests
import structlog
import urllib3
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from standardwebhooks import Webhook

from config.db import connection_release
from conversations.media.addresses import _AddressRefused, _NameNotResolved
from conversations.media.transport import _DeadlineGuard, _session
from webhooks.address import ALLOW_SETTING, url_syntax_reason
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from webhooks.secret import SecretUnreadable, secret_decrypt

logger = structlog.get_logger(__name__)

Outcome = WebhookAttempt.Outcome

# The wait after each failed attempt: Svix's published schedule (immediately, then 5 s, 5 min, 30 min, 2 h,
# 5 h, 10 h, 10 h). 8 attempts over 27 h 35 min: a receiver down for a day still gets every event, and
# the early retries catch a blip without hammering a receiver that is down. The sweep runs every
# WEBHOOK_SWEEP_SECONDS, so each wait may be up to that much longer.
RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
EXCERPT_BYTES = 1024  # of the answer kept per attempt: enough to read an error page's message, bounded
# A claimed attempt's lease: longer than the attempt can take (the send is cut at WEBHOOK_TIMEOUT_SECONDS;
# the name resolution before it is bounded by the system resolver, seconds), short enough that a dead
# worker's attempt is retried within minutes.
ATTEMPT_LEASE_MARGIN = timedelta(seconds=120)
# A delivery the sweep handed to a queue stays reserved for its task this long; a lost task only delays it.
QUEUED_LEASE = timedelta(minutes=5)
SWEEP_BATCH = 500  # deliveries handed out per sweep; the next sweep takes the rest
# A delivery due "now" on a web node whose clock runs a little ahead of the worker's is still due.
CLOCK_SKEW = timedelta(seconds=2)
USER_AGENT = "ChannelsAPI-Webhooks/1.0"
ATTEMPT_OWNER_PREFIX = "a"  # an attempt's lease owner; a sweep's reservation starts with "q"


@dataclass(frozen=True)
class _Claimed:
    delivery_id: str
    token: str
    number: int
    event_id: str
    payload: str
    url: str  # "" when the channel's webhook was removed
    secret: str | None  # None when the channel has no webhook or the secret cannot be decrypted
    secret_unreadable: bool = False


@dataclass(frozen=True)
class Answer:
    outcome: str
    status_code: int | None = None
    excerpt: str = ""


def _lease_free(*, now: datetime, token: str = "") -> Q:
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    return free | Q(lease_owner=token) if token else free


def deliveries_due_claim(*, now: datetime | None = None, limit: int = SWEEP_BATCH) -> list[tuple[str, str]]:
    """Reserve the deliveries that are due and not being sent, for QUEUED_LEASE, under one token; returns
    (delivery id, token) pairs for delivery_attempt. A sweep running beside another reserves only what the
    other did not (the conditional UPDATE decides), so a delivery is queued once per lease."""
    now = now or timezone.now()
    ids = list(
        WebhookDelivery.objects.filter(
            _lease_free(now=now), status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    if not ids:
        return []
    token = "q" + secrets.token_hex(12)
    WebhookDelivery.objects.filter(_lease_free(now=now), pk__in=ids, status=WebhookDelivery.Status.PENDING).update(
        lease_owner=token, lease_until=now + QUEUED_LEASE
    )
    return [
        (pk, token) for pk in WebhookDelivery.objects.filter(pk__in=ids, lease_owner=token).values_list("pk", flat=True)
    ]


def delivery_attempt(*, delivery_id: str, token: str = "") -> WebhookAttempt | None:
    """One attempt of the delivery, if it is due and nobody else is sending it (else None, nothing done).
    `token` is the sweep's reservation (deliveries_due_claim), "" for a delivery handed over at commit.

    Precondition: no transaction of the caller's is open around it in production (the send holds none).
    """
    claimed = _claim(delivery_id=delivery_id, token=token, now=timezone.now())
    if claimed is None:
        return None
    connection_release()  # back to the pool for the send: a slow receiver holds no database connection
    started_at = timezone.now()
    started = time.monotonic()
    if claimed.secret is None:
        answer = Answer(outcome=Outcome.SECRET_UNREADABLE if claimed.secret_unreadable else Outcome.NO_WEBHOOK)
    else:
        answer = attempt_send(
            url=claimed.url, event_id=claimed.event_id, payload=claimed.payload, secret=claimed.secret
        )
    duration_ms = round((time.monotonic() - started) * 1000)
    return _record(claimed=claimed, answer=answer, started_at=started_at, duration_ms=duration_ms)


def _claim(*, delivery_id: str, token: str, now: datetime) -> _Claimed | None:
    owner = ATTEMPT_OWNER_PREFIX + secrets.token_hex(12)
    with transaction.atomic():
        if _channel_busy(delivery_id=delivery_id, token=token, now=now):
            return None
        won = WebhookDelivery.objects.filter(
            _lease_free(now=now, token=token),
            pk=delivery_id,
            status=WebhookDelivery.Status.PENDING,
            next_attempt_at__lte=now + CLOCK_SKEW,
        ).update(
            lease_owner=owner,
            lease_until=now + timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS) + ATTEMPT_LEASE_MARGIN,
            attempts=F("attempts") + 1,
        )
        if not won:
            return None
        delivery = WebhookDelivery.objects.select_related("event").get(pk=delivery_id)
        endpoint = (
            WebhookEndpoint.objects.filter(channel_id=delivery.event.channel_id)
            .values_list("url", "secret_encrypted")
            .first()
        )
    url, secret, unreadable = "", None, False
    if endpoint is not None:
        url = endpoint[0]
        try:
            secret = secret_decrypt(encrypted=endpoint[1])
        except SecretUnreadable:
            unreadable = True
    return _Claimed(
        delivery_id=delivery.pk,
        token=owner,
        number=delivery.attempts,
        event_id=delivery.event_id,
        payload=delivery.event.payload,
        url=url,
        secret=secret,
        secret_unreadable=unreadable,
    )


def _channel_busy(*, delivery_id: str, token: str, now: datetime) -> bool:
    """Whether the delivery's channel already has WEBHOOK_CHANNEL_MAX_IN_FLIGHT attempts being sent (by any
    worker); then the delivery is put off by WEBHOOK_SWEEP_SECONDS (no attempt counted) and the sweep queues
    it again. So one channel's slow receiver holds at most that many delivery workers, whatever the number
    of its events. The channel's webhook row is locked for the check and the claim (released at commit), so
    two workers cannot both take the last place."""
    channel_id = WebhookDelivery.objects.filter(pk=delivery_id).values_list("event__channel_id", flat=True).first()
    if channel_id is None:
        return False
    list(WebhookEndpoint.objects.select_for_update().filter(channel_id=channel_id).values_list("pk", flat=True))
    in_flight = (
        WebhookDelivery.objects.filter(
            event__channel_id=channel_id,
            status=WebhookDelivery.Status.PENDING,
            lease_owner__startswith=ATTEMPT_OWNER_PREFIX,
            lease_until__gt=now,
        )
        .exclude(pk=delivery_id)
        .count()
    )
    if in_flight < settings.WEBHOOK_CHANNEL_MAX_IN_FLIGHT:
        return False
    WebhookDelivery.objects.filter(
        _lease_free(now=now, token=token), pk=delivery_id, status=WebhookDelivery.Status.PENDING
    ).update(next_attempt_at=now + timedelta(seconds=settings.WEBHOOK_SWEEP_SECONDS), lease_owner="", lease_until=None)
    logger.info("webhook delivery put off: its channel's receiver is busy", delivery_id=delivery_id)
    return True


def attempt_headers(*, event_id: str, payload: str, secret: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers, signed with the `standardwebhooks` package: `v1,` + base64 of
    HMAC-SHA256 over "id.timestamp.body". The timestamp is the attempt's (receivers refuse old ones), in
    whole seconds as the header carries it."""
    at = at.astimezone(UTC).replace(microsecond=0)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(math.floor(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id=event_id, timestamp=at, data=payload),
        "Content-Type": "application/json",
        "Accept": "*/*",
        "Accept-Encoding": "identity",  # the excerpt is read raw, and only its first KiB
    }


def attempt_send(*, url: str, event_id: str, payload: str, secret: str) -> Answer:
    """POST the payload once. A whole 2xx answer within WEBHOOK_TIMEOUT_SECONDS (connection, request and the
    answer's status line, headers and body, all together) succeeds; anything else is an outcome to retry:
    another status (a 3xx too: no redirect is followed), an answer cut or not whole in time, or an address
    the rules refuse (checked at the address the connection goes to)."""
    reason = url_syntax_reason(url=url)
    if reason is not None:
        return Answer(outcome=Outcome.INVALID_URL)
    timeout = float(settings.WEBHOOK_TIMEOUT_SECONDS)
    deadline = time.monotonic() + timeout
    headers = attempt_headers(event_id=event_id, payload=payload, secret=secret, at=timezone.now())
    with (
        _session(timeout=timeout, allow_setting=ALLOW_SETTING, user_agent=USER_AGENT) as session,
        _DeadlineGuard(deadline=deadline) as guard,
    ):
        try:
            response = session.post(
                url,
                data=payload.encode(),
                headers=headers,
                allow_redirects=False,
                stream=True,
                timeout=(timeout, timeout),
            )
        except (
            requests.RequestException,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            OSError,
            ValueError,
        ) as exc:
            return Answer(outcome=_failure_outcome(exc, expired=guard.expired or time.monotonic() >= deadline))
        with response:
            excerpt, complete = _answer_read(response=response, deadline=deadline)
    status = response.status_code
    if not complete:
        # The answer did not arrive whole within the time limit (cut, or still dripping at the deadline):
        # whatever its status line said, the receiver may not have taken the event.
        expired = guard.expired or time.monotonic() >= deadline
        return Answer(
            outcome=Outcome.TIMEOUT if expired else Outcome.CONNECTION_FAILED, status_code=status, excerpt=excerpt
        )
    if 200 <= status < 300:
        outcome = Outcome.SUCCEEDED
    elif 300 <= status < 400:
        outcome = Outcome.REDIRECT
    else:
        outcome = Outcome.HTTP_STATUS
    return Answer(outcome=outcome, status_code=status, excerpt=excerpt)


def _failure_outcome(exc: BaseException, *, expired: bool) -> str:
    if isinstance(exc, _AddressRefused):
        return Outcome.ADDRESS_REFUSED
    if isinstance(exc, _NameNotResolved):
        return Outcome.DNS_FAILED
    if expired or isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)):
        return Outcome.TIMEOUT
    if isinstance(exc, (requests.exceptions.SSLError, urllib3.exceptions.SSLError)):
        return Outcome.TLS_FAILED
    if isinstance(exc, (requests.exceptions.InvalidURL, urllib3.exceptions.LocationValueError)):
        return Outcome.INVALID_URL
    return Outcome.CONNECTION_FAILED


def _answer_read(*, response: requests.Response, deadline: float) -> tuple[str, bool]:
    """Read the whole answer, until the deadline at most: its first EXCERPT_BYTES as text whatever the bytes
    are (invalid UTF-8 and U+0000, which no database text column holds, become U+FFFD), and whether it came
    whole (to its Content-Length, its last chunk, or the end of the connection) before the deadline. The
    rest is read and dropped."""
    raw = response.raw
    data = bytearray()
    complete = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock = getattr(getattr(raw, "connection", None), "sock", None)
            if sock is not None:
                sock.settimeout(remaining)
            chunk = raw.read1(64 * 1024, decode_content=False)
            if not chunk:
                complete = time.monotonic() < deadline
                break
            if len(data) < EXCERPT_BYTES:
                data += chunk[: EXCERPT_BYTES - len(data)]
    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError):
        pass  # cut: what came before the failure is what there is to show
    return bytes(data).decode("utf-8", errors="replace").replace("\x00", "\ufffd"), complete


def _record(*, claimed: _Claimed, answer: Answer, started_at: datetime, duration_ms: int) -> WebhookAttempt:
    finished = timezone.now()
    fields: dict[str, object] = {
        "last_status_code": answer.status_code,
        "last_outcome": answer.outcome,
        "lease_owner": "",
        "lease_until": None,
    }
    if answer.outcome == Outcome.SUCCEEDED:
        fields.update(status=WebhookDelivery.Status.SUCCEEDED, next_attempt_at=None, delivered_at=finished)
    elif answer.outcome == Outcome.NO_WEBHOOK or claimed.number >= MAX_ATTEMPTS:
        # The webhook was removed (a redelivery from the admin sends again once there is one), or the
        # schedule is over.
        fields.update(status=WebhookDelivery.Status.FAILED, next_attempt_at=None)
    else:
        fields.update(next_attempt_at=finished + RETRY_DELAYS[claimed.number - 1])
    with transaction.atomic():
        attempt = WebhookAttempt.objects.create(
            delivery_id=claimed.delivery_id,
            number=claimed.number,
            url=claimed.url,
            started_at=started_at,
            duration_ms=duration_ms,
            status_code=answer.status_code,
            outcome=answer.outcome,
            response_excerpt=answer.excerpt,
        )
        owned = WebhookDelivery.objects.filter(pk=claimed.delivery_id, lease_owner=claimed.token).update(**fields)
    connection_release()
    log = logger.info if answer.outcome == Outcome.SUCCEEDED else logger.warning
    log(
        "webhook attempt",
        delivery_id=claimed.delivery_id,
        event_id=claimed.event_id,
        attempt=claimed.number,
        outcome=str(answer.outcome),
        status_code=answer.status_code,
        duration_ms=duration_ms,
        lease_kept=bool(owned),
    )
    return attempt
