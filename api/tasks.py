"""Celery tasks: interfaces that call one service each (api.maintenance.cleanup, api.flow.later)."""

import time
from dataclasses import asdict
from datetime import datetime

import structlog
from celery import shared_task
from celery.exceptions import Reject

from api.flow.later import MESSAGE_ANSWER_TASK_NAME, message_answer_run_retrying
from api.maintenance.cleanup import cleanup_run

# The task's name is what a queued message and the beat schedule (settings.CELERY_BEAT_SCHEDULE) carry. It is
# the name the task had before it moved here from channels_app, so that messages queued by a worker or beat of
# the previous release, during a deploy, still find it.
CLEANUP_TASK_NAME = "channels_app.tasks.cleanup_task"

logger = structlog.get_logger(__name__)


@shared_task(name=CLEANUP_TASK_NAME, ignore_result=True)
def cleanup_task() -> dict[str, int]:
    """Celery beat's periodic clean-up (settings.CELERY_BEAT_SCHEDULE): expired idempotency records, expired
    media (rows and files), reservations of abandoned messages. The counts go to the worker's log."""
    return asdict(cleanup_run())


@shared_task(
    bind=True,
    name=MESSAGE_ANSWER_TASK_NAME,
    ignore_result=True,
    # Acknowledged once done, not when taken: a worker killed mid-answer leaves the task with the broker, which
    # hands it to another worker (settings.CELERY_BROKER_TRANSPORT_OPTIONS); the run is idempotent (api/flow/later.py).
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # a run waiting on another run's lease tries again until that lease ends
)
def message_answer_task(self, message_id: str, lease_until: str, claim_record_id: str = "", claim_owner: str = ""):
    """The think and record phases of a message accepted with `Prefer: respond-async` (README "Replies
    later")."""
    while True:
        # Inside: the first query and the lease take too. The database's failures are waited out here; any
        # other ends the run after it recorded the failure (api/flow/later.py).
        retry_in = message_answer_run_retrying(
            message_id=message_id,
            lease_until=datetime.fromisoformat(lease_until),
            claim_record_id=claim_record_id,
            claim_owner=claim_owner,
        )
        if retry_in is None:
            return
        try:
            raise self.retry(countdown=retry_in)
        except Reject:
            # The broker did not take the retry (Celery turns that into a rejection, which would drop the
            # task): wait here instead, holding no connection.
            logger.warning("message task retry not queued; waiting in this worker", message_id=message_id)
            time.sleep(retry_in)
