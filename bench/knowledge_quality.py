"""Retrieval quality of the agent's knowledge on a public question-answer set that nobody here wrote:
recall@1, recall@5 and MRR@10 of the messages endpoint's `sources`.

    .tools/bin/pip download --no-deps -d var/bench zaragoza-construction-faq==1.2.1
    DATABASE_URL=postgres://.../some_db .venv/bin/python bench/knowledge_quality.py \
        var/bench/zaragoza_construction_faq-1.2.1-py3-none-any.whl [--limit N] [--language english]

The data set: "Swedish Construction FAQ" by Zaragoza AB, 503 question-answer pairs (its English file,
`data/faq-en.jsonl`), licence CC BY 4.0 (DOI 10.5281/zenodo.19630803), read straight from the PyPI wheel:
it is no dependency of the product. Each answer becomes one document (PUT through the API: its id and its
text, the answer alone; the title is the entry's id, so the question's words are not given away); each
question is then sent as a new contact's message to the built-in agent, and the rank of the answer's
document in `sources` is scored. The agent is set to give 10 passages (MRR@10) and 100,000 characters.

Runs in this process through Django's test client against the database DATABASE_URL names (a fresh
workspace each run; nothing else is touched).
"""

import argparse
import json
import os
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django

django.setup()

from django.test import Client  # noqa: E402

from billing.credits import credits_grant  # noqa: E402
from channels_app.models import AIAgent, Channel, Workspace  # noqa: E402
from channels_app.services import apikey_create  # noqa: E402

DATA_FILE = "zaragoza_construction_faq/data/faq-en.jsonl"


def load(wheel: str) -> list[dict]:
    with zipfile.ZipFile(wheel) as archive:
        lines = archive.read(DATA_FILE).decode().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("wheel")
    parser.add_argument("--limit", type=int, default=0, help="only the first N pairs")
    parser.add_argument("--language", default="english")
    parser.add_argument("--embedding-model", default="", help="with --base-url: an embeddings stand-in's model")
    parser.add_argument("--base-url", default="", help="an OpenAI-compatible /v1 serving /embeddings")
    args = parser.parse_args()
    pairs = load(args.wheel)[: args.limit or None]

    slug = f"knowledge-quality-{int(time.time())}"
    workspace = Workspace.objects.create(name=slug, slug=slug, rate_limit_per_minute=0)  # no 429s
    credits_grant(workspace=workspace, amount=10**9, note="knowledge quality bench")
    agent = AIAgent.objects.create(
        workspace=workspace,
        name="FAQ agent",
        provider="openai" if args.base_url else "builtin",
        base_url=args.base_url,
        model="none",
        embedding_model=args.embedding_model,
        knowledge_max_passages=10,
        knowledge_max_chars=100_000,
        knowledge_language=args.language,
        fallback_text="-",
    )
    channel = Channel.objects.create(workspace=workspace, name="FAQ", type=Channel.Type.API, agent=agent)
    _, key = apikey_create(workspace=workspace, name="bench")
    client = Client()
    headers: dict = {"HTTP_X_API_KEY": key}

    started = time.monotonic()
    for pair in pairs:
        body = {"title": pair["id"], "text": pair["a"]}
        response = client.put(
            f"/api/v1/agents/{agent.pk}/documents/{pair['id']}",
            data=json.dumps(body),
            content_type="application/json",
            **headers,
        )
        assert response.status_code == 200, response.content
    loaded = time.monotonic() - started

    ranks: list[int | None] = []
    started = time.monotonic()
    for index, pair in enumerate(pairs):
        message = {
            "type": "TEXT",
            "contactIdentifier": f"q{index}@example.com",
            "content": {"text": {"body": pair["q"]}},
        }
        response = client.post(
            f"/api/v1/channels/{channel.pk}/messages",
            data=json.dumps(message),
            content_type="application/json",
            **headers,
        )
        if response.status_code != 200:
            raise SystemExit(f"message {index}: {response.status_code} {response.content[:300]!r}")
        found = [source["documentId"] for source in response.json()["sources"]]
        ranks.append(found.index(pair["id"]) + 1 if pair["id"] in found else None)
    asked = time.monotonic() - started

    count = len(ranks)
    recall_1 = sum(1 for rank in ranks if rank == 1) / count
    recall_5 = sum(1 for rank in ranks if rank is not None and rank <= 5) / count
    mrr_10 = sum(1 / rank for rank in ranks if rank is not None and rank <= 10) / count
    print(
        json.dumps(
            {
                "dataset": "zaragoza-construction-faq 1.2.1 (en), CC BY 4.0",
                "pairs": count,
                "language": args.language,
                "embeddings": args.embedding_model or None,
                "recall@1": round(recall_1, 3),
                "recall@5": round(recall_5, 3),
                "mrr@10": round(mrr_10, 3),
                "load_seconds": round(loaded, 1),
                "ask_seconds": round(asked, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
