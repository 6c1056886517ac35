"""Documents given by URL (README "The agent's knowledge"): 202 PROCESSING, then fetched in the background
(a thread here: no broker) under the media download's address rules, and READY or FAILED with an errorCode.
Real HTTP servers on loopback stand for the integrator's site."""

import threading
import time

import pytest
from werkzeug import Request, Response

from channels_app.models import AIAgent
from knowledge.models import Document, Passage
from tests.conversations.test_media_inspect import pdf_bomb_bytes, pdf_bytes
from tests.knowledge.test_documents_api import Knowledge

pytestmark = pytest.mark.django_db(transaction=True)

LOOPBACK = ["127.0.0.1", "localhost"]


@pytest.fixture
def knowledge(client, channel, api_key, settings) -> Knowledge:
    settings.MEDIA_ALLOW_PRIVATE_HOSTS = ["127.0.0.1"]
    return Knowledge(client, api_key, channel.agent)


def settled(knowledge: Knowledge, document_id: str, seconds: float = 30) -> dict:
    """The document once it is no longer PROCESSING."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        document = knowledge.get(knowledge.url(document_id)).json()["document"]
        if document["status"] != "PROCESSING":
            return document
        time.sleep(0.05)
    raise AssertionError(f"{document_id} still PROCESSING after {seconds} s")


def put_url(knowledge: Knowledge, document_id: str, url: str, title: str = "Page") -> dict:
    response = knowledge.put(document_id, {"title": title, "url": url})
    assert response.status_code == 202, response.content
    document = response.json()["document"]
    assert (document["status"], document["url"]) == ("PROCESSING", url)
    return settled(knowledge, document_id)


HTML = """<!doctype html><html><head><title>Help</title><style>body{color:red}</style>
<script>var secret = "do not index me";</script></head><body>
<nav><a href="/">Home</a></nav>
<h1>Shipping</h1><p>Orders ship within
two business days.</p>
<h2>Abroad</h2><ul><li>Portugal: 5 days</li><li>Spain: 4 days</li></ul>
<script>document.write("nor me")</script><noscript>nor this</noscript>
<p>Questions? Write to help&#64;example.com &amp; we answer.</p></body></html>"""


def test_an_html_page_is_reduced_to_its_readable_text(knowledge, httpserver):
    httpserver.expect_request("/help").respond_with_data(HTML, content_type="text/html; charset=utf-8")

    document = put_url(knowledge, "shipping", httpserver.url_for("/help"), title="Shipping help")

    assert (document["status"], document["errorCode"]) == ("READY", None), document
    passages = list(Passage.objects.filter(document__key="shipping").values_list("heading", "text"))
    text = " ".join(text for _, text in passages)
    assert "Orders ship within two business days." in text
    assert "- Portugal: 5 days" in text and "help@example.com & we answer" in text
    assert "secret" not in text and "nor me" not in text and "nor this" not in text and "color" not in text
    assert passages == [
        ("Shipping", "Orders ship within two business days."),
        (
            "Shipping > Abroad",
            "- Portugal: 5 days\n\n- Spain: 4 days\n\nQuestions? Write to help@example.com & we answer.",
        ),
    ]
    agent = AIAgent.objects.get(pk=knowledge.agent.pk)
    assert agent.knowledge_passages == Passage.objects.filter(agent=agent).count()


def test_markdown_and_pdf_files_are_read(knowledge, httpserver):
    httpserver.expect_request("/faq.md").respond_with_data("# FAQ\n\nWe open at 9.", content_type="text/markdown")
    httpserver.expect_request("/terms.pdf").respond_with_data(
        pdf_bytes("Terms of sale: payment within 14 days."), content_type="application/pdf"
    )
    assert put_url(knowledge, "faq", httpserver.url_for("/faq.md"))["status"] == "READY"
    assert put_url(knowledge, "terms", httpserver.url_for("/terms.pdf"))["status"] == "READY"
    assert Passage.objects.get(document__key="faq").text == "We open at 9."
    assert "payment within 14 days" in Passage.objects.get(document__key="terms").text


@pytest.mark.parametrize(
    ("respond", "code"),
    [
        (lambda server: server.expect_request("/x").respond_with_data("gone", status=404), "media_unreachable"),
        (
            lambda server: server.expect_request("/x").respond_with_data(b"\x89PNG\r\n\x1a\n" + b"\0" * 64),
            "document_type_unsupported",
        ),
        (
            # a redirect to the cloud's metadata address: refused before any connection to it
            lambda server: server.expect_request("/x").respond_with_response(
                Response(status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
            ),
            "media_url_not_allowed",
        ),
        (
            # a redirect to a private network address the allow list does not hold
            lambda server: server.expect_request("/x").respond_with_response(
                Response(status=302, headers={"Location": "http://10.20.30.40:8080/admin"})
            ),
            "media_url_not_allowed",
        ),
        (
            # a PDF bomb: the extractor's limits stop it, no text is left to index
            lambda server: server.expect_request("/x").respond_with_data(
                pdf_bomb_bytes(pages=2, expanded_bytes=2 * 1024 * 1024), content_type="application/pdf"
            ),
            "document_empty",
        ),
        (
            # an HTML bomb: a million nested tags and nothing readable
            lambda server: server.expect_request("/x").respond_with_data(
                "<div>" * 1_000_000 + "<script>" + "x" * 100_000 + "</script>", content_type="text/html"
            ),
            "document_empty",
        ),
    ],
    ids=["http-404", "image", "redirect-to-metadata", "redirect-to-private", "pdf-bomb", "html-bomb"],
)
def test_a_url_that_cannot_be_indexed_fails_with_its_code(knowledge, httpserver, respond, code, settings):
    settings.MEDIA_EXTRACT_CPU_SECONDS = 1
    respond(httpserver)
    document = put_url(knowledge, "page", httpserver.url_for("/x"))
    assert (document["status"], document["errorCode"], document["chunks"]) == ("FAILED", code, 0)
    assert not Passage.objects.filter(document__key="page").exists()


def test_a_failed_refresh_keeps_the_last_good_passages(knowledge, httpserver):
    httpserver.expect_oneshot_request("/faq").respond_with_data("# FAQ\n\nWe open at 9.", content_type="text/plain")
    assert put_url(knowledge, "faq", httpserver.url_for("/faq"))["status"] == "READY"
    httpserver.expect_oneshot_request("/faq").respond_with_data("down", status=503)
    document = put_url(knowledge, "faq", httpserver.url_for("/faq"))
    assert (document["status"], document["errorCode"], document["chunks"]) == ("FAILED", "media_unreachable", 1)
    assert Passage.objects.get(document__key="faq").text == "We open at 9."


def test_the_same_page_again_keeps_updated_at(knowledge, httpserver):
    httpserver.expect_request("/faq").respond_with_data("# FAQ\n\nWe open at 9.", content_type="text/plain")
    first = put_url(knowledge, "faq", httpserver.url_for("/faq"))
    again = put_url(knowledge, "faq", httpserver.url_for("/faq"))
    assert again == first
    assert Document.objects.get(key="faq").chunks == 1


def test_a_text_put_during_a_fetch_wins_over_the_fetch(knowledge, httpserver):
    release = threading.Event()

    def slow(request: Request) -> Response:
        release.wait(20)
        return Response("# Old\n\nFrom the page.", content_type="text/plain")

    httpserver.expect_request("/slow").respond_with_handler(slow)
    response = knowledge.put("doc", {"title": "Doc", "url": httpserver.url_for("/slow")})
    assert response.status_code == 202
    assert knowledge.put("doc", {"title": "Doc", "text": "From the text."}).status_code == 200
    release.set()
    time.sleep(1.0)  # the fetch finishes and finds its token gone
    document = knowledge.get(knowledge.url("doc")).json()["document"]
    assert (document["status"], document["url"]) == ("READY", None)
    assert list(Passage.objects.filter(document__key="doc").values_list("text", flat=True)) == ["From the text."]
