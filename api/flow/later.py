"""Replies later (README "Replies later"): the think and record phases of an accepted message, run after
the request answered 202, by a Celery task (api/tasks.py) or, without a broker, a background thread of the
server's process (a greenlet under gevent).

A run carries only ids: the message, the lease its accept set, and the idempotency claim if any. It rebuilds
the rest from the database, and answers only a message that still waits (PENDING) whose lease is the one it
carries or has run out. So a task delivered twice, or redelivered after its worker was killed, still gives
the message exactly one answer: the late acknowledgement hands a dead worker's task to another worker, whose
run takes over once the dead run's lease has run out (earlier it tries again later), and the record and
failure phases store nothing when another run finished first (api.flow.messaging.AnsweredElsewhere).
"""

import threading
import time
from datetime import datetime, timedelta

import structlog
from celery import current_app
from django.conf import settings
from django.db import InterfaceError, OperationalError, connections, transaction
from django.utils import timezone

from api.flow.idempotency import Claim, idempotency_lock_extend, idempotency_owned
from api.flow.messaging import Accepted, AnsweredElsewhere, lease_seconds, message_answer
from config.broker import broker_outage
from config.db import connection_release
from config.errors import ApplicationError
from conversations.models import Message
from conversations.selectors import agent_config
from conversations.services import inbound_message_lease_take

logger = structlog.get_logger(__name__)

# The database's failures a run waits out (message_answer_run_retrying): a broken or refused connection, a
# pool with no connection free (psycopg_pool's PoolTimeout, which Django wraps in OperationalError).
DATABASE_ERRORS = (OperationalError, InterfaceError)
_DB_RETRY_FIRST_SECONDS = 0.5

# A run that finds another live run's lease tries again this long after that lease ends (clocks of the
# web and worker machines a little apart).
_RETRY_MARGIN_SECONDS = 2.0
# The task that runs `message_answer_run` (api/tasks.py), sent by its name: the tasks import this module, not
# the other way round. Queued messages carry the name, so it never changes.
MESSAGE_ANSWER_TASK_NAME = "api.tasks.message_answer_task"


def message_answer_later(accepted: Accepted) -> None:
    """Hand the accepted message's answer to a worker: a Celery task through the broker; with none (Celery
    eager: no REDIS_URL, or the tests), or when the broker does not take it, a daemon thread of this process,
    started now that the accept phase committed. Never runs the agent in the caller."""
    args = (
        accepted.message.pk,
        accepted.lease_until.isoformat(),
        accepted.claim.record_id if accepted.claim is not None else "",
        accepted.claim.owner if accepted.claim is not None else "",
    )
    if not current_app.conf.task_always_eager and not broker_outage.down():
        try:
            # retry=False and the transport's timeouts (settings): a broker that does not answer costs at most
            # BROKER_TIMEOUT_SECONDS; this process answers instead, and skips the broker for a while.
            current_app.send_task(MESSAGE_ANSWER_TASK_NAME, args, retry=False)
            return
        except Exception as error:
            broker_outage.found_down(error)
            logger.warning("message task not queued; answering in this process", message_id=accepted.message.pk)
    thread = threading.Thread(target=_run_here, args=args, name=f"answer-{accepted.message.pk}", daemon=True)
    transaction.on_commit(thread.start)  # at once: the accept phase committed (unless a caller's block is open)


def _run_here(message_id: str, lease_until: str, claim_record_id: str, claim_owner: str) -> None:
    """A background thread's run. A daemon: should the process end first, the message's lease runs out and
    the clean-up releases its credits (api/maintenance/cleanup.py); a retry with its idempotency key answers it."""
    try:
        message_answer_run_retrying(
            message_id=message_id,
            lease_until=datetime.fromisoformat(lease_until),
            claim_record_id=claim_record_id,
            claim_owner=claim_owner,
        )
    except Exception:
        logger.exception("message answer failed", message_id=message_id)
    finally:
        connections.close_all()


class _Interrupted(Exception):
    """The database failed a run after it took the message's lease (`lease_until`)."""

    def __init__(self, *, lease_until: datetime) -> None:
        super().__init__("interrupted")
        self.lease_until = lease_until


def message_answer_run_retrying(
    *, message_id: str, lease_until: datetime, claim_record_id: str = "", claim_owner: str = ""
) -> float | None:
    """message_answer_run, run again while the database fails it (a restart, a failover, terminated
    backends, an exhausted pool): after 0.5 s, then twice as long each time up to DB_RETRY_MAX_SECONDS,
    until the run ends (the message answered or failed, here or by another run, or abandoned by the
    clean-up). The run is idempotent, so running it again after a failure at any point is safe; without
    this, a worker that took the task up during an outage acknowledged it and the message waited for its
    lease to run out, unanswered."""
    delay = _DB_RETRY_FIRST_SECONDS
    while True:
        try:
            return message_answer_run(
                message_id=message_id,
                lease_until=lease_until,
                claim_record_id=claim_record_id,
                claim_owner=claim_owner,
            )
        except (*DATABASE_ERRORS, _Interrupted) as error:
            if isinstance(error, _Interrupted):
                lease_until = error.lease_until  # this run's own lease: the next run takes it over at once
            logger.warning(
                "message answer interrupted by the database; trying again",
                message_id=message_id,
                error=type(error.__cause__ or error).__name__,
                retry_in=delay,
            )
        connections.close_all()  # a broken connection is not reused
        time.sleep(delay)
        delay = min(delay * 2, float(settings.DB_RETRY_MAX_SECONDS))


def message_answer_run(
    *, message_id: str, lease_until: datetime, claim_record_id: str = "", claim_owner: str = ""
) -> float | None:
    """Answer the message, once (the module's docstring). Returns None when done (answered, failed, or not
    this run's to answer), or the seconds after which to try again: another run's lease still holds the
    message, and that run may have died. A failure of the agent is recorded as in the synchronous mode
    (message FAILED, credits released, `message.failed` emitted) and not raised."""
    now = timezone.now()
    message = (
        Message.objects.select_related(
            "conversation", "conversation__channel", "conversation__channel__agent", "conversation__channel__team"
        )
        .filter(pk=message_id, status=Message.Status.PENDING)
        .first()
    )
    if message is None:
        return None
    claim = Claim(record_id=claim_record_id, owner=claim_owner, message_id=message_id) if claim_record_id else None
    if claim is not None and not idempotency_owned(claim=claim):
        return None  # a retry with the key took the message over; that retry's run answers it
    conversation = message.conversation
    channel = conversation.channel
    agent_row = channel.agent or conversation.agent
    if agent_row is None:
        return None  # the channel lost its agent: the clean-up releases the reservation of the abandoned message
    agent = agent_config(agent=agent_row)
    lease = lease_seconds(agent=agent)
    until = now + timedelta(seconds=lease)
    if not inbound_message_lease_take(message_id=message_id, expected=lease_until, now=now, lease_until=until):
        current = (
            Message.objects.filter(pk=message_id, status=Message.Status.PENDING)
            .values_list("lease_until", flat=True)
            .first()
        )
        if current is None:
            return None
        return max(1.0, (current - now).total_seconds() + _RETRY_MARGIN_SECONDS)
    if claim is not None:
        idempotency_lock_extend(claim=claim, locked_until=until)
    accepted = Accepted(
        workspace_id=conversation.workspace_id,
        channel_id=channel.pk,
        team_id=channel.team_id,
        team_name=channel.team.name if channel.team is not None else None,
        agent=agent,
        contact_id=conversation.contact_id,
        conversation_id=conversation.pk,
        conversation_created_at=conversation.created_at,
        conversation_status=conversation.status,
        conversation_closed_at=conversation.closed_at,
        conversation_close_reason=conversation.close_reason or None,
        message=message,
        reserved=message.credits_reserved,
        claim=claim,
        lease_seconds=lease,
        lease_until=until,
        exclusive=True,
        burst_mode=channel.burst_mode,
        burst_window_ms=channel.burst_window_ms,
    )
    connection_release()  # the think phase holds none
    try:
        message_answer(accepted)
    except AnsweredElsewhere:
        logger.info("message already answered by another run", message_id=message_id)
    except ApplicationError as error:
        logger.info("message answer failed", message_id=message_id, code=error.code)
    except DATABASE_ERRORS as error:
        raise _Interrupted(lease_until=until) from error  # nor its failure recorded: the caller runs it again
    except Exception:
        logger.exception("message answer failed", message_id=message_id)
    return None
