"""An agent saved with another `knowledge_language` than its passages were indexed in: index them again."""

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from channels_app.models import AIAgent
from knowledge.models import Document
from knowledge.services import knowledge_reindex


@receiver(post_save, sender=AIAgent)
def agent_language_changed(sender: type[AIAgent], instance: AIAgent, created: bool, **kwargs: Any) -> None:
    if created or kwargs.get("raw") or not instance.knowledge_documents:
        return
    if Document.objects.filter(agent=instance, chunks__gt=0).exclude(language=instance.knowledge_language).exists():
        knowledge_reindex(agent_id=instance.pk)
