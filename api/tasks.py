"""Celery tasks: interfaces that call one service (api.cleanup)."""

from dataclasses import asdict

from celery import shared_task

from api.cleanup import cleanup_run

# The task's name is what a queued message and the beat schedule (settings.CELERY_BEAT_SCHEDULE) carry. It is
# the name the task had before it moved here from channels_app, so that messages queued by a worker or beat of
# the previous release, during a deploy, still find it.
CLEANUP_TASK_NAME = "channels_app.tasks.cleanup_task"


@shared_task(name=CLEANUP_TASK_NAME, ignore_result=True)
def cleanup_task() -> dict[str, int]:
    """Celery beat's periodic clean-up (settings.CELERY_BEAT_SCHEDULE): expired idempotency records, expired
    media (rows and files), reservations of abandoned messages. The counts go to the worker's log."""
    return asdict(cleanup_run())
