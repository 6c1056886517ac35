"""An agent's knowledge (README "The agent's knowledge"): the documents an integrator or an operator gives
it, each split into passages that PostgreSQL's full-text search finds (knowledge/retrieval.py), and the
number of passages each word of an agent's passages appears in (`Term`, the ranking's document frequency).

Every write of an agent's documents runs in one transaction that first locks the agent's row
(knowledge/services.py): writes of one agent are one at a time, so its counters (`AIAgent.knowledge_*`) and
terms never drift, and two writes of the same document never mix their passages."""

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.db import models

from channels_app.models import AIAgent


class Document(models.Model):
    class Status(models.TextChoices):
        PROCESSING = "PROCESSING", "Processing"
        READY = "READY", "Ready"
        FAILED = "FAILED", "Failed"

    id = models.BigAutoField(primary_key=True)
    agent = models.ForeignKey(AIAgent, on_delete=models.CASCADE, related_name="documents")
    key = models.CharField(
        max_length=128, verbose_name="document id", help_text="The id the integrator gave it (the API's documentId)."
    )
    title = models.CharField(max_length=500)
    url = models.CharField(max_length=2048, blank=True, help_text="Where the text was fetched from, if anywhere.")
    text = models.TextField(blank=True, help_text="The text as sent, or as read from the URL.")
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PROCESSING)
    error_code = models.CharField(max_length=64, blank=True)
    # sha256 of the title, text, URL and metadata: the same content again changes nothing.
    content_hash = models.CharField(max_length=64, blank=True)
    # The URL fetch this row waits for: a later PUT of the same document replaces it, and the older fetch
    # then finds another token and stores nothing.
    fetch_token = models.CharField(max_length=40, blank=True)
    chunks = models.PositiveIntegerField(default=0)
    chars = models.PositiveIntegerField(default=0)
    language = models.CharField(max_length=20, blank=True, help_text="The text search configuration it was indexed in.")
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["agent", "key"], name="knowledge_document_agent_key")]
        indexes = [models.Index(fields=["agent", "-created_at", "-id"], name="knowledge_document_recent")]

    def __str__(self) -> str:
        return self.title or self.key


class Passage(models.Model):
    """A piece of a document that stands on its own: a few paragraphs or list items under their headings."""

    id = models.BigAutoField(primary_key=True)
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="passages")
    agent = models.ForeignKey(AIAgent, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveIntegerField()
    heading = models.TextField(blank=True, help_text="The headings above it, outermost first, joined by ' > '.")
    text = models.TextField()
    # The document's title and the heading (weight A) and the text, in the agent's language.
    search = SearchVectorField()
    lexemes = models.PositiveIntegerField(default=0)  # length(search): the ranking's passage length
    # Words with a digit (order numbers, codes, SKUs), lower-cased: an exact one in the question wins.
    codes = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    # Its embedding, normalised, where the agent has an embedding model (knowledge/embeddings.py); else null.
    embedding = ArrayField(models.FloatField(), null=True, blank=True)

    class Meta:
        ordering = ["document", "position"]
        indexes = [
            models.Index(fields=["document", "position"], name="knowledge_passage_document"),
            models.Index(fields=["agent"], name="knowledge_passage_agent"),
            GinIndex(fields=["search"], name="knowledge_passage_search"),
            GinIndex(fields=["codes"], name="knowledge_passage_codes"),
        ]

    def __str__(self) -> str:
        return self.heading or self.text[:80]


class Term(models.Model):
    """How many of the agent's passages hold the lexeme: the inverse document frequency of the ranking."""

    id = models.BigAutoField(primary_key=True)
    agent = models.ForeignKey(AIAgent, on_delete=models.CASCADE, related_name="+")
    lexeme = models.TextField()
    passages = models.PositiveIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "lexeme"], name="knowledge_term_agent_lexeme")]

    def __str__(self) -> str:
        return self.lexeme
