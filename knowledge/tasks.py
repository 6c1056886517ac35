"""Celery tasks: interfaces that call one service each (knowledge.services)."""

from celery import shared_task

from knowledge.services import document_fetch_run


@shared_task(name="knowledge.tasks.document_fetch_task", ignore_result=True, acks_late=True)
def document_fetch_task(document_pk: int, token: str) -> None:
    """Fetch and index a document given by URL (README "The agent's knowledge"). A run delivered twice
    indexes once: the second finds the fetch token gone."""
    document_fetch_run(document_pk=document_pk, token=token)
