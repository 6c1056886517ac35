"""Celery tasks: interfaces that call one service (channels_app.cleanup)."""

from dataclasses import asdict

from celery import shared_task

from channels_app.cleanup import cleanup_run


@shared_task(ignore_result=True)
def cleanup_task() -> dict[str, int]:
    """Celery beat's periodic clean-up (settings.CELERY_BEAT_SCHEDULE): expired idempotency records, expired
    media (rows and files), reservations of abandoned messages. The counts go to the worker's log."""
    return asdict(cleanup_run())
