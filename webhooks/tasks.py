"""Celery tasks of the webhooks: interfaces that call one service each."""

from celery import shared_task

from webhooks.delivery import delivery_attempt
from webhooks.dispatch import deliveries_sweep


@shared_task(ignore_result=True)
def webhook_deliver_task(delivery_id: str, token: str = "") -> None:
    """One attempt of a delivery (queued at the event's commit, or by the sweep). The retry schedule lives
    in the database (webhooks.delivery.RETRY_DELAYS), not in Celery: a failed attempt sets the next time,
    and the sweep queues it then."""
    delivery_attempt(delivery_id=delivery_id, token=token)


@shared_task(ignore_result=True)
def webhooks_sweep_task() -> int:
    """Celery beat (settings.CELERY_BEAT_SCHEDULE): queue every due delivery nobody is sending."""
    return deliveries_sweep()
