"""Hand deliveries to whatever sends them: Celery workers through the broker, or, with no broker, a few
background threads of this process (README "Webhooks", "Without a broker").

Nothing here is needed for an event to be delivered in the end: the delivery rows are in the database, and
the sweep (Celery beat every WEBHOOK_SWEEP_SECONDS, or the local threads' own sweep) finds every due one.
Dispatching at commit only makes the first attempt immediate.
"""

import queue
import threading
import time

import structlog
from celery import current_app
from django.conf import settings
from django.db import connections

from config.broker import broker_outage
from config.db import connection_release
from webhooks.delivery import deliveries_due_claim, delivery_attempt
from webhooks.models import WebhookDelivery

logger = structlog.get_logger(__name__)

Claims = list[tuple[str, str]]  # (delivery id, the sweep's reservation token or "")


def deliveries_dispatch(*, claims: Claims) -> None:
    """Queue one attempt per delivery. Never raises and never waits on a receiver: it runs in the web
    request after its commit (transaction.on_commit), so a slow or dead receiver, or a broker that is
    down, must cost the request nothing: the request's database connection goes back to the pool first,
    the broker is given BROKER_TIMEOUT_SECONDS at most, and a delivery it did not take is sent by this
    process's local sender, as without a broker (and the sweep finds any that is lost)."""
    if not claims:
        return
    connection_release()  # a request's connection goes back to the pool before the hand-over
    if current_app.conf.task_always_eager or broker_outage.down():
        if settings.WEBHOOK_LOCAL_SENDER:
            _local.submit(claims)
        return
    from webhooks.tasks import webhook_deliver_task

    for index, (delivery_id, token) in enumerate(claims):
        try:
            # retry=False and the transport's timeouts (settings): a broker that does not answer costs at
            # most BROKER_TIMEOUT_SECONDS; then this process sends, as without a broker (config/broker.py).
            webhook_deliver_task.apply_async((delivery_id, token), retry=False)
        except Exception as error:
            broker_outage.found_down(error)
            logger.warning("webhook delivery not queued; sending it from this process", delivery_id=delivery_id)
            if settings.WEBHOOK_LOCAL_SENDER:
                _local.submit(claims[index:])
            return


def deliveries_sweep() -> int:
    """Queue every due delivery nobody is sending (Celery beat's webhooks_sweep_task). Returns how many."""
    claims = deliveries_due_claim()
    deliveries_dispatch(claims=claims)
    return len(claims)


class _LocalSender:
    """Without a broker (no REDIS_URL: Celery runs tasks eagerly, in the caller), a web request must not
    send the webhook itself: a receiver that takes 15 s would hold it that long. Instead this process
    keeps WEBHOOK_LOCAL_WORKERS daemon threads (greenlets under gevent) that take deliveries from a queue,
    and one that sweeps every WEBHOOK_SWEEP_SECONDS (the retries) while any delivery is pending, then
    stops until the next dispatch. They start with the first event of the process. WEBHOOK_LOCAL_SENDER
    false turns them off (then only `manage.py webhook deliver` sends).

    Daemon threads die with the process: an attempt cut short leaves a lease that runs out, and the
    delivery waits in the database for the next sweep, of this process after a restart (at its first
    event) or of `manage.py webhook deliver`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Made at the first submit, not at import: under gevent the queue's locks must be the patched ones.
        self._queue: queue.Queue[tuple[str, str]] | None = None
        self._workers = 0
        self._sweeping = False
        self._submitted = 0  # counts submissions, so the sweeper never stops just after one it did not see

    def submit(self, claims: Claims) -> None:
        starting: list[threading.Thread] = []
        with self._lock:  # held for bookkeeping only: threads start after it is released
            if self._queue is None:
                self._queue = queue.Queue()
            for claim in claims:
                self._queue.put(claim)
            self._submitted += 1
            while self._workers < max(1, int(settings.WEBHOOK_LOCAL_WORKERS)):
                self._workers += 1
                starting.append(threading.Thread(target=self._work, name=f"webhook-sender-{self._workers}"))
            if not self._sweeping:
                self._sweeping = True
                starting.append(threading.Thread(target=self._sweep, name="webhook-sweep"))
        for thread in starting:
            thread.daemon = True
            thread.start()

    def _work(self) -> None:
        assert self._queue is not None
        while True:
            delivery_id, token = self._queue.get()
            try:
                delivery_attempt(delivery_id=delivery_id, token=token)
            except Exception:
                logger.exception("webhook attempt failed", delivery_id=delivery_id)
            finally:
                connections.close_all()

    def _sweep(self) -> None:
        assert self._queue is not None
        while True:
            time.sleep(float(settings.WEBHOOK_SWEEP_SECONDS))
            with self._lock:
                seen = self._submitted
                if not settings.WEBHOOK_LOCAL_SENDER:
                    self._sweeping = False
                    return
            try:
                for claim in deliveries_due_claim():
                    self._queue.put(claim)
                idle = not WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING).exists()
            except Exception:
                logger.exception("webhook sweep failed")
                idle = False
            finally:
                connections.close_all()
            if idle:
                with self._lock:
                    if self._submitted == seen:
                        self._sweeping = False
                        return


_local = _LocalSender()
