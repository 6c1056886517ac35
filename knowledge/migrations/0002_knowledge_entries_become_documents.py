"""The built-in agent's question-and-answer entries (the former channels_app.KnowledgeEntry) become documents:
one per entry, titled by the question, its text the answer, indexed as a PUT of that text would be. Then the
entries' table goes. Going back recreates the empty table (the documents stay)."""

import hashlib
import json

from django.db import migrations

from knowledge.chunking import chunks_split, codes_of

ENTRIES = "channels_app_knowledgeentry"
CREATE_ENTRIES = f"""
CREATE TABLE "{ENTRIES}" ("id" varchar(40) NOT NULL PRIMARY KEY, "question" text NOT NULL, "answer" text NOT NULL,
    "created_at" timestamp with time zone NOT NULL,
    "agent_id" varchar(40) NOT NULL REFERENCES "channels_app_aiagent"("id") DEFERRABLE INITIALLY DEFERRED);
CREATE INDEX "channels_app_knowledgeentry_agent_id_980a1301" ON "{ENTRIES}" ("agent_id");
"""


def entries_to_documents(apps, schema_editor):
    from knowledge.services import _INSERT_PASSAGES, _TERMS_ADD  # the same statements as the API's writes

    Document = apps.get_model("knowledge", "Document")
    AIAgent = apps.get_model("channels_app", "AIAgent")
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT id, agent_id, question, answer, created_at FROM "{ENTRIES}" ORDER BY created_at, id')
        entries = cursor.fetchall()
        for entry_id, agent_id, question, answer, created_at in entries:
            agent = AIAgent.objects.get(pk=agent_id)
            title = " ".join(question.split())[:500] or entry_id
            chunks = chunks_split(answer.replace("\x00", ""))
            digest = hashlib.sha256(json.dumps([title, answer, "", {}], ensure_ascii=False).encode()).hexdigest()
            document = Document.objects.create(
                agent_id=agent_id,
                key=entry_id,
                title=title,
                text=answer,
                status="READY" if chunks else "FAILED",
                error_code="" if chunks else "document_empty",
                content_hash=digest,
                chunks=len(chunks),
                chars=sum(len(chunk.text) for chunk in chunks),
                language=agent.knowledge_language,
                created_at=created_at,
                updated_at=created_at,
            )
            params = {"document": document.pk, "agent": agent_id}
            cursor.execute(
                _INSERT_PASSAGES,
                {
                    **params,
                    "lang": agent.knowledge_language,
                    "title": title,
                    "positions": list(range(len(chunks))),
                    "headings": [""] * len(chunks),
                    "texts": [chunk.text for chunk in chunks],
                    "codes": [" ".join(codes_of(f"{title} {chunk.text}")) for chunk in chunks],
                    "embeddings": [""] * len(chunks),
                },
            )
            cursor.execute(_TERMS_ADD, params)
            cursor.execute(
                "UPDATE channels_app_aiagent SET knowledge_documents = knowledge_documents + 1, "
                "knowledge_passages = knowledge_passages + %s WHERE id = %s",
                [len(chunks), agent_id],
            )


class Migration(migrations.Migration):
    dependencies = [("knowledge", "0001_initial")]

    operations = [
        migrations.RunPython(entries_to_documents, migrations.RunPython.noop),
        migrations.RunSQL(f'DROP TABLE "{ENTRIES}"', reverse_sql=CREATE_ENTRIES),
    ]
