"""Media messages through the API, end to end: download, checks, cache, what the agent receives, failures.

Media hosts (and the stand-in LLM) are pytest-httpserver on loopback, never `responses`: it would replace
the transport and so skip the address check under test.
"""

import base64
import codecs
import hashlib
import json
import os
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone
from werkzeug import Response

from api.models import IdempotencyRecord
from billing.models import UsageLedgerEntry
from conversations.agents import openai_agent
from conversations.agents.openai_agent import _human_size
from conversations.media import pipeline
from conversations.models import MediaAsset, Message
from conversations.services import text_chars
from tests.api.test_query_counts import EXISTING_CONTACT
from tests.conftest import SEED_TEXT, Api, error_of
from tests.conversations.test_media_inspect import (
    NUL_PDF_MAPPING,
    mp4_bytes,
    pdf_bomb_bytes,
    pdf_bytes,
    pdf_mapped_bytes,
    png_bytes,
    wav_bytes,
)
from tests.conversations.test_openai_agent import completion
from tests.factories import AIAgentFactory, ChannelFactory, WorkspaceFactory, api_key_for
from tests.llm_stand_in import StandIn, start

LOOPBACK = ["127.0.0.1", "localhost"]
CHAT_PATH = "/v1/chat/completions"
PDF_TEXT = "Invoice 1042 total 99 EUR"


@pytest.fixture(autouse=True)
def media_settings(settings, tmp_path):
    settings.MEDIA_ALLOW_PRIVATE_HOSTS = LOOPBACK
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings


def media_message(kind: str, url: str, **fields: str) -> dict:
    return {"type": kind, "contactIdentifier": "user@example.com", "content": {kind.lower(): {"url": url, **fields}}}


def serve(httpserver, path: str, data: bytes, content_type: str = "application/octet-stream") -> str:
    httpserver.expect_request(path).respond_with_data(data, content_type=content_type)
    return httpserver.url_for(path)


def hits(httpserver, path: str) -> int:
    return sum(1 for request, _ in httpserver.log if request.path == path)


def chat_requests(httpserver) -> list[dict]:
    return [json.loads(request.get_data()) for request, _ in httpserver.log if request.path == CHAT_PATH]


@pytest.fixture
def llm_api(client, workspace, api_key, httpserver):
    """The API with an `openai` agent whose endpoint is the same loopback server that serves the media."""
    agent = AIAgentFactory(
        workspace=workspace,
        provider="openai",
        base_url=httpserver.url_for("/v1"),
        model="test-model",
        instructions="You are the shop's assistant.",
    )
    return Api(client, ChannelFactory(workspace=workspace, agent=agent), api_key)


# --- each type accepted ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "data", "fields", "mime_type", "acknowledgement"),
    [
        pytest.param(
            "IMAGE",
            png_bytes(),
            {"caption": "My receipt"},
            "image/png",
            "Thanks, I received your image: \u201cMy receipt\u201d.",
            id="png",
        ),
        pytest.param("AUDIO", wav_bytes(), {}, "audio/x-wav", "Thanks, I received your audio.", id="wav"),
        pytest.param(
            "VIDEO",
            mp4_bytes(),
            {"caption": "Unboxing"},
            "video/mp4",
            "Thanks, I received your video: \u201cUnboxing\u201d.",
            id="mp4",
        ),
        pytest.param(
            "DOCUMENT",
            pdf_bytes(PDF_TEXT),
            {"filename": "invoice.pdf", "caption": "My invoice"},
            "application/pdf",
            "Thanks, I received your document \u201cinvoice.pdf\u201d: \u201cMy invoice\u201d.",
            id="pdf",
        ),
    ],
)
def test_each_media_type_is_accepted_end_to_end(
    api, httpserver, workspace, kind, data, fields, mime_type, acknowledgement
):
    # given
    url = serve(httpserver, "/files/upload", data)

    # when
    response = api.post(media_message(kind, url, **fields))

    # then: the built-in agent acknowledges the media by type and caption
    assert response.status_code == 200, response.content
    body = response.json()
    assert [message["content"]["text"]["body"] for message in body["aiMessages"]] == [acknowledgement]
    assert body["usage"]["credits"] == 1
    inbound = Message.objects.get(pk=body["messageId"])
    assert (inbound.status, inbound.type, inbound.media_mime_type, inbound.media_size) == (
        "ANSWERED",
        kind,
        mime_type,
        len(data),
    )
    asset = inbound.media_asset
    assert (asset.url, asset.mime_type, asset.size, asset.workspace_id) == (url, mime_type, len(data), workspace.pk)
    assert asset.sha256 == hashlib.sha256(data).hexdigest()
    assert asset.file.name.startswith(f"media/{asset.sha256[:2]}/{asset.sha256}")
    with default_storage.open(asset.file.name, "rb") as stored:
        assert stored.read() == data
    assert asset.expires_at == pytest.approx(asset.created_at + timedelta(hours=24), abs=timedelta(seconds=5))
    if kind == "DOCUMENT":
        assert PDF_TEXT in asset.text


# --- limits and refusals, through the API ----------------------------------------------------------------


def _too_large(httpserver, settings):
    settings.MEDIA_MAX_BYTES = 100
    return media_message("IMAGE", serve(httpserver, "/big.png", png_bytes() + b"\0" * 200))


def _not_found(httpserver, settings):
    httpserver.expect_request("/missing.png").respond_with_data("gone", status=404)
    return media_message("IMAGE", httpserver.url_for("/missing.png"))


def _loopback_not_allowed(httpserver, settings):
    settings.MEDIA_ALLOW_PRIVATE_HOSTS = []
    serve(httpserver, "/secret.png", png_bytes())
    return media_message("IMAGE", f"http://127.0.0.1:{httpserver.port}/secret.png")


def _name_resolving_to_loopback(httpserver, settings):
    settings.MEDIA_ALLOW_PRIVATE_HOSTS = []
    return media_message("IMAGE", serve(httpserver, "/secret.png", png_bytes()))  # http://localhost:port/


def _redirect_to_private(httpserver, settings):
    settings.MEDIA_ALLOW_PRIVATE_HOSTS = ["localhost"]  # the name only: 127.0.0.2 is not allowed
    httpserver.expect_request("/start").respond_with_response(
        Response(status=302, headers={"Location": f"http://127.0.0.2:{httpserver.port}/secret.png"})
    )
    return media_message("IMAGE", httpserver.url_for("/start"))


def _type_mismatch(httpserver, settings):
    return media_message("IMAGE", serve(httpserver, "/photo.png", pdf_bytes("not a picture")))


@pytest.mark.parametrize(
    ("make_request", "status", "code", "details"),
    [
        pytest.param(
            _too_large, 413, "media_too_large", {"field": "content.image.url", "limitBytes": 100}, id="too-large"
        ),
        pytest.param(
            _not_found,
            400,
            "media_unreachable",
            {"field": "content.image.url", "reason": "http_status", "status": 404},
            id="http-404",
        ),
        pytest.param(
            _loopback_not_allowed,
            400,
            "media_url_not_allowed",
            {"field": "content.image.url", "reason": "address"},
            id="loopback-address",
        ),
        pytest.param(
            _name_resolving_to_loopback,
            400,
            "media_url_not_allowed",
            {"field": "content.image.url", "reason": "address"},
            id="name-resolving-to-loopback",
        ),
        pytest.param(
            _redirect_to_private,
            400,
            "media_url_not_allowed",
            {"field": "content.image.url", "reason": "address"},
            id="redirect-to-private",
        ),
        pytest.param(
            _type_mismatch,
            400,
            "media_type_mismatch",
            {"field": "content.image.url", "declaredType": "IMAGE", "detectedMimeType": "application/pdf"},
            id="type-mismatch",
        ),
    ],
)
def test_media_errors_answer_the_contract_and_keep_the_message(
    api, httpserver, settings, workspace, make_request, status, code, details
):
    # given
    body = make_request(httpserver, settings)

    # when
    response = api.post(body, idempotency_key="media-error-1")

    # then: the contract's error body, with the field to fix
    assert response.status_code == status
    error = error_of(response)
    assert error["code"] == code
    assert error["details"].items() >= details.items()
    # the message is kept as FAILED, its credits released, nothing charged, nothing cached, the key freed
    inbound = Message.objects.get()
    assert (inbound.status, inbound.error_code, inbound.credits_reserved, inbound.media_asset) == (
        "FAILED",
        code,
        0,
        None,
    )
    assert not Message.objects.filter(direction="OUTBOUND").exists()
    workspace.refresh_from_db()
    assert (workspace.credit_balance, workspace.credit_reserved) == (100, 0)
    assert not UsageLedgerEntry.objects.filter(kind="CHARGE").exists()
    assert not MediaAsset.objects.exists()
    assert IdempotencyRecord.objects.get().state == "RELEASED"
    if code == "media_url_not_allowed":
        assert [request.path for request, _ in httpserver.log if request.path.endswith("secret.png")] == []


def test_a_retry_with_the_same_key_after_a_media_error_answers_the_stored_message(api, httpserver):
    # given: the first attempt meets a 404
    httpserver.expect_oneshot_request("/later.png").respond_with_data("not yet", status=404)
    url = httpserver.url_for("/later.png")
    first = api.post(media_message("IMAGE", url), idempotency_key="retry-1")
    assert first.status_code == 400

    # when: the file is there now, and the integrator retries with the same key
    serve(httpserver, "/later.png", png_bytes())
    second = api.post(media_message("IMAGE", url), idempotency_key="retry-1")

    # then: the same inbound message is answered, not a second one
    assert second.status_code == 200
    inbound = Message.objects.get(direction="INBOUND")
    assert second.json()["messageId"] == inbound.pk
    assert (inbound.status, inbound.error_code, inbound.media_mime_type) == ("ANSWERED", "", "image/png")


# --- what the agent receives -----------------------------------------------------------------------------


def test_a_pdf_text_reaches_the_agent(llm_api, httpserver):
    # given
    httpserver.expect_request(CHAT_PATH, method="POST").respond_with_json(completion("Your invoice is paid."))
    url = serve(httpserver, "/docs/invoice.pdf", pdf_bytes(PDF_TEXT), content_type="application/pdf")

    # when
    response = llm_api.post(media_message("DOCUMENT", url, filename="invoice.pdf", caption="Is it paid?"))

    # then
    assert response.status_code == 200, response.content
    assert response.json()["aiMessages"][0]["content"] == {"text": {"body": "Your invoice is paid."}, "type": "text"}
    [sent] = chat_requests(httpserver)
    last = sent["messages"][-1]
    assert last["role"] == "user"
    assert last["content"].startswith('[Document "invoice.pdf" (application/pdf, ')
    assert "Is it paid?]\nDocument text:\n" in last["content"]
    assert PDF_TEXT in last["content"]


UTF_16_NOTE = "Pedido 1042: la caja lleg\u00f3 rota. \u6771\u4eac\n"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        pytest.param(codecs.BOM_UTF16_LE + UTF_16_NOTE.encode("utf-16-le"), "text/plain", id="utf-16-le-bom"),
        pytest.param(codecs.BOM_UTF16_BE + UTF_16_NOTE.encode("utf-16-be"), "text/plain", id="utf-16-be-bom"),
        pytest.param(UTF_16_NOTE.encode("utf-8"), "text/plain; charset=utf-8", id="utf-8"),
    ],
)
def test_a_text_document_reaches_the_agent_decoded(llm_api, httpserver, data, content_type):
    # given
    httpserver.expect_request(CHAT_PATH, method="POST").respond_with_json(completion("We will replace it."))
    url = serve(httpserver, "/notes/note.txt", data, content_type=content_type)

    # when
    response = llm_api.post(media_message("DOCUMENT", url))

    # then: the agent reads the text, not UTF-16 bytes read as UTF-8 (NULs between the letters)
    assert response.status_code == 200, response.content
    [sent] = chat_requests(httpserver)
    assert sent["messages"][-1]["content"].endswith("Document text:\n" + UTF_16_NOTE)
    assert MediaAsset.objects.get().text == UTF_16_NOTE


def test_a_pdf_whose_text_holds_nul_and_lone_surrogates_is_answered(llm_api, httpserver):
    # given: the font's map turns the glyphs into "A", NUL, a lone surrogate, "B"
    httpserver.expect_request(CHAT_PATH, method="POST").respond_with_json(completion("Got it."))
    url = serve(httpserver, "/docs/odd.pdf", pdf_mapped_bytes(b"A0DB", NUL_PDF_MAPPING))

    # when
    response = llm_api.post(media_message("DOCUMENT", url, filename="odd.pdf"))

    # then: PostgreSQL could store neither character: they are left out instead of failing the message
    assert response.status_code == 200, response.content
    assert MediaAsset.objects.get().text == "A\ufffdB"
    assert Message.objects.get(direction="INBOUND").status == "ANSWERED"


def test_a_retry_after_an_agent_failure_takes_the_document_from_the_cache(llm_api, httpserver, monkeypatch):
    # given: a UTF-16 document, and a provider that fails once
    monkeypatch.setattr(openai_agent, "MAX_RETRIES", 0)
    httpserver.expect_oneshot_request(CHAT_PATH, method="POST").respond_with_data("busy", status=503)
    httpserver.expect_request(CHAT_PATH, method="POST").respond_with_json(completion("We will replace it."))
    url = serve(httpserver, "/notes/note.txt", codecs.BOM_UTF16_LE + UTF_16_NOTE.encode("utf-16-le"))
    body = media_message("DOCUMENT", url)

    # when
    first = llm_api.post(body, idempotency_key="doc-retry-1")
    second = llm_api.post(body, idempotency_key="doc-retry-1")

    # then: the failure is the agent's (502, never a 500 over the file's content), and the retry answers
    # the same message with the file and its text from the cache
    assert first.status_code == 502, first.content
    assert second.status_code == 200, second.content
    assert Message.objects.filter(direction="INBOUND").count() == 1
    assert hits(httpserver, "/notes/note.txt") == 1
    assert MediaAsset.objects.get().text == UTF_16_NOTE
    assert chat_requests(httpserver)[-1]["messages"][-1]["content"].endswith(UTF_16_NOTE)


def test_a_pdf_bomb_is_answered_with_its_description_and_read_once(llm_api, httpserver, settings):
    # given: 50 pages sharing one 8 MiB stream of path operators (minutes of pypdf), a 1 s CPU limit
    settings.MEDIA_EXTRACT_CPU_SECONDS = 1
    httpserver.expect_request(CHAT_PATH, method="POST").respond_with_json(completion("I cannot read that file."))
    data = pdf_bomb_bytes(pages=50)
    url = serve(httpserver, "/docs/bomb.pdf", data)

    # when: sent twice
    first = llm_api.post(media_message("DOCUMENT", url, filename="bomb.pdf"))
    second = llm_api.post(media_message("DOCUMENT", url, filename="bomb.pdf"))

    # then: both answered; the agent got the document's description without text; the second came from the
    # cache, so the file was neither downloaded nor parsed again
    assert first.status_code == second.status_code == 200, first.content
    description = f'[Document "bomb.pdf" (application/pdf, {_human_size(len(data))})]'
    assert [sent["messages"][-1]["content"] for sent in chat_requests(httpserver)] == [description, description]
    assert hits(httpserver, "/docs/bomb.pdf") == 1
    assert MediaAsset.objects.get().text == ""


def test_an_image_reaches_the_agent_as_a_data_url(llm_api, httpserver):
    # given
    httpserver.expect_request(CHAT_PATH, method="POST").respond_with_json(completion("A receipt."))
    url = serve(httpserver, "/img/receipt.png", png_bytes(), content_type="image/png")

    # when
    response = llm_api.post(media_message("IMAGE", url, caption="What is this?"))

    # then: the bytes go inline, so the provider needs no access to the contact's URL
    assert response.status_code == 200, response.content
    [sent] = chat_requests(httpserver)
    text_part, image_part = sent["messages"][-1]["content"]
    assert text_part == {"type": "text", "text": "What is this?"}
    prefix = "data:image/png;base64,"
    assert image_part["type"] == "image_url" and image_part["image_url"]["url"].startswith(prefix)
    assert base64.b64decode(image_part["image_url"]["url"][len(prefix) :]) == png_bytes()


SIGNED_QUERY = "?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=5ig-7f3a9c"


def _image_then_text(llm_api, httpserver):
    """An image with a signed URL (answered), then a text message of the same contact: the stand-in LLM's
    two chat requests, as raw bodies and parsed."""
    httpserver.expect_request(CHAT_PATH, method="POST").respond_with_json(completion("A receipt."))
    url = serve(httpserver, "/img/receipt.png", png_bytes(), content_type="image/png") + SIGNED_QUERY
    assert llm_api.post(media_message("IMAGE", url, caption="My receipt")).status_code == 200
    return url


def _raw_chat_bodies(httpserver) -> list[bytes]:
    return [request.get_data() for request, _ in httpserver.log if request.path == CHAT_PATH]


def test_earlier_images_go_to_the_provider_as_bytes_never_by_their_url(llm_api, httpserver, assert_statements):
    # given
    url = _image_then_text(llm_api, httpserver)

    # when: the next message (no contactName: naming the contact is a statement of its own); its think phase
    # runs the one history query, as for a text-only conversation
    body = {
        "type": "TEXT",
        "contactIdentifier": SEED_TEXT["contactIdentifier"],
        "content": {"text": {"body": "Is it paid?"}},
    }
    with assert_statements(EXISTING_CONTACT):
        assert llm_api.post(body).status_code == 200

    # then: the earlier image went again as its cached bytes, from storage (not downloaded again)
    assert hits(httpserver, "/img/receipt.png") == 1
    first, second = chat_requests(httpserver)
    # after the instructions and the contact's name and attributes
    caption, image = second["messages"][2]["content"]
    assert caption == {"type": "text", "text": "My receipt"}
    assert image["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    assert second["messages"][-1] == {"role": "user", "content": "Is it paid?"}
    for raw in _raw_chat_bodies(httpserver):  # not the URL, not its signature, in any form
        assert b"receipt.png" not in raw and b"5ig-7f3a9c" not in raw and b"AKIAEXAMPLE" not in raw
    assert url not in json.dumps([first, second])


def test_earlier_images_over_the_budget_are_described(llm_api, httpserver, settings):
    # given: a budget smaller than the earlier image
    settings.MEDIA_HISTORY_IMAGE_BYTES = len(png_bytes()) - 1
    _image_then_text(llm_api, httpserver)

    # when
    assert llm_api.post({**SEED_TEXT, "content": {"text": {"body": "Is it paid?"}}}).status_code == 200

    # then
    _, second = chat_requests(httpserver)
    assert second["messages"][2] == {
        "role": "user",
        "content": f"[Image (image/png, {_human_size(len(png_bytes()))}): My receipt]",
    }
    assert all(b"receipt.png" not in raw and b"5ig-7f3a9c" not in raw for raw in _raw_chat_bodies(httpserver))


def test_an_earlier_image_whose_file_is_gone_is_described_not_downloaded_again(llm_api, httpserver):
    # given: the cached file was lost with the storage
    _image_then_text(llm_api, httpserver)
    default_storage.delete(MediaAsset.objects.get().file.name)

    # when
    assert llm_api.post({**SEED_TEXT, "content": {"text": {"body": "Is it paid?"}}}).status_code == 200

    # then
    assert hits(httpserver, "/img/receipt.png") == 1
    _, second = chat_requests(httpserver)
    assert second["messages"][2]["content"].startswith("[Image (image/png, ")
    assert all(b"receipt.png" not in raw and b"5ig-7f3a9c" not in raw for raw in _raw_chat_bodies(httpserver))


def test_audio_is_transcribed_when_the_agent_asks_for_it(llm_api, httpserver):
    # given
    llm_api.channel.agent.transcribe_audio = True
    llm_api.channel.agent.save()
    httpserver.expect_request("/v1/audio/transcriptions", method="POST").respond_with_json(
        {"text": "Where is my order?"}
    )
    httpserver.expect_request(CHAT_PATH, method="POST").respond_with_json(completion("On its way."))
    url = serve(httpserver, "/voice/note.wav", wav_bytes())

    # when
    response = llm_api.post(media_message("AUDIO", url))

    # then: the file went to the transcription endpoint, its text to the chat model
    assert response.status_code == 200, response.content
    [upload] = [request for request, _ in httpserver.log if request.path == "/v1/audio/transcriptions"]
    assert wav_bytes() in upload.get_data()
    [sent] = chat_requests(httpserver)
    assert sent["messages"][-1]["content"] == (
        f'[Audio "note.wav" (audio/x-wav, {_human_size(len(wav_bytes()))})]\nTranscription:\nWhere is my order?'
    )


def test_a_failed_transcription_is_an_agent_failure_and_the_file_stays_cached(
    llm_api, httpserver, workspace, monkeypatch
):
    # given: the provider has no transcription endpoint
    monkeypatch.setattr(openai_agent, "MAX_RETRIES", 0)
    llm_api.channel.agent.transcribe_audio = True
    llm_api.channel.agent.save()
    httpserver.expect_request("/v1/audio/transcriptions").respond_with_data("no such route", status=404)
    url = serve(httpserver, "/voice/note.wav", wav_bytes())

    # when
    response = llm_api.post(media_message("AUDIO", url))

    # then: a 502 like any agent failure; a retry will not download the file again
    assert response.status_code == 502
    assert error_of(response)["code"] == "agent_unavailable"
    assert Message.objects.get().status == "FAILED"
    assert MediaAsset.objects.get().url == url
    workspace.refresh_from_db()
    assert workspace.credit_reserved == 0


def test_a_cached_image_still_reaches_the_agent_as_bytes(llm_api, httpserver):
    httpserver.expect_request(CHAT_PATH, method="POST").respond_with_json(completion("A receipt."))
    url = serve(httpserver, "/img/receipt.png", png_bytes(), content_type="image/png")

    llm_api.post(media_message("IMAGE", url))
    assert llm_api.post(media_message("IMAGE", url, caption="Again")).status_code == 200

    assert hits(httpserver, "/img/receipt.png") == 1
    first, second = chat_requests(httpserver)
    assert second["messages"][-1]["content"][1] == first["messages"][-1]["content"][1]


def test_audio_without_transcription_and_video_are_described_to_the_agent(llm_api, httpserver):
    httpserver.expect_request(CHAT_PATH, method="POST").respond_with_json(completion("Noted."))
    audio = serve(httpserver, "/voice/note.wav", wav_bytes())
    video = serve(httpserver, "/clips/unboxing.mp4", mp4_bytes())

    assert llm_api.post(media_message("AUDIO", audio)).status_code == 200
    assert llm_api.post(media_message("VIDEO", video, caption="It arrived broken")).status_code == 200

    assert hits(httpserver, "/v1/audio/transcriptions") == 0
    first, second = chat_requests(httpserver)
    assert first["messages"][-1]["content"] == f'[Audio "note.wav" (audio/x-wav, {_human_size(len(wav_bytes()))})]'
    assert second["messages"][-1]["content"] == (
        f'[Video "unboxing.mp4" (video/mp4, {_human_size(len(mp4_bytes()))}): It arrived broken]'
    )


# --- the cache -------------------------------------------------------------------------------------------


def test_the_same_url_is_downloaded_once_while_cached(api, httpserver):
    # given
    url = serve(httpserver, "/cached.png", png_bytes())

    # when
    first = api.post(media_message("IMAGE", url, caption="one"))
    second = api.post(media_message("IMAGE", url, caption="two"))

    # then
    assert first.status_code == second.status_code == 200
    assert hits(httpserver, "/cached.png") == 1
    asset = MediaAsset.objects.get()
    assert list(Message.objects.filter(direction="INBOUND").values_list("media_asset", "media_mime_type")) == [
        (asset.pk, "image/png"),
        (asset.pk, "image/png"),
    ]


def test_an_expired_asset_is_downloaded_again(api, httpserver):
    url = serve(httpserver, "/cached.png", png_bytes())
    api.post(media_message("IMAGE", url))
    MediaAsset.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    assert api.post(media_message("IMAGE", url)).status_code == 200

    assert hits(httpserver, "/cached.png") == 2
    assert MediaAsset.objects.count() == 2


def test_a_cached_file_is_checked_against_the_new_message_type(api, httpserver):
    url = serve(httpserver, "/cached.png", png_bytes())
    api.post(media_message("IMAGE", url))

    response = api.post(media_message("DOCUMENT", url))

    assert response.status_code == 400
    assert error_of(response)["details"]["field"] == "content.document.url"
    assert hits(httpserver, "/cached.png") == 1


def test_the_same_bytes_from_two_urls_are_stored_once(api, httpserver, media_settings):
    first = serve(httpserver, "/a.png", png_bytes())
    second = serve(httpserver, "/b.png", png_bytes())

    api.post(media_message("IMAGE", first))
    api.post(media_message("IMAGE", second))

    assert MediaAsset.objects.count() == 2
    assert len(set(MediaAsset.objects.values_list("file", flat=True))) == 1
    assert sum(len(files) for _, _, files in os.walk(media_settings.MEDIA_ROOT)) == 1


def test_the_cache_is_per_workspace(api, client, httpserver):
    # given: another workspace sent the URL first
    url = serve(httpserver, "/shared.png", png_bytes())
    other = WorkspaceFactory(credit_balance=10)
    Api(client, ChannelFactory(workspace=other), api_key_for(other)[1]).post(media_message("IMAGE", url))

    # when
    assert api.post(media_message("IMAGE", url)).status_code == 200

    # then: a hit would confirm what the other workspace sent, so this one downloads for itself
    assert hits(httpserver, "/shared.png") == 2
    assert MediaAsset.objects.count() == 2


def test_a_missing_cached_file_is_downloaded_again(api, httpserver):
    url = serve(httpserver, "/cached.png", png_bytes())
    api.post(media_message("IMAGE", url))
    default_storage.delete(MediaAsset.objects.get().file.name)

    assert api.post(media_message("IMAGE", url)).status_code == 200

    assert hits(httpserver, "/cached.png") == 2


# --- the think phase holds no database resources ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_no_transaction_or_connection_is_held_during_the_download(client, httpserver, monkeypatch):
    # given a real commit-per-transaction setup (not the test's wrapping transaction)
    from billing.credits import credits_grant

    channel = ChannelFactory(workspace=WorkspaceFactory(credit_balance=0))
    credits_grant(workspace=channel.workspace, amount=10)
    api = Api(client, channel, api_key_for(channel.workspace)[1])
    url = serve(httpserver, "/photo.png", png_bytes())
    seen = []
    original = pipeline.media_download

    def spy(**kwargs):
        seen.append(
            {"in_transaction": connection.in_atomic_block, "connection_open": connection.connection is not None}
        )
        return original(**kwargs)

    monkeypatch.setattr(pipeline, "media_download", spy)

    # when
    response = api.post(media_message("IMAGE", url))

    # then
    assert response.status_code == 200, response.content
    assert seen == [{"in_transaction": False, "connection_open": False}]


def test_downloads_are_measured_by_outcome(api, httpserver):
    from prometheus_client import REGISTRY

    def count(outcome: str) -> float:
        return REGISTRY.get_sample_value("channels_media_download_bytes_count", {"outcome": outcome}) or 0.0

    before = (count("ok"), count("media_unreachable"))
    api.post(media_message("IMAGE", serve(httpserver, "/ok.png", png_bytes(), "image/png")))
    httpserver.expect_request("/gone.png").respond_with_data("gone", status=404)
    api.post(media_message("IMAGE", httpserver.url_for("/gone.png")))

    assert (count("ok"), count("media_unreachable")) == (before[0] + 1, before[1] + 1)


# --- later turns: what the history keeps of a media message ---------------------------------------------------


@pytest.fixture
def stand_in():
    stand_in = StandIn()
    server = start(stand_in)
    yield stand_in
    server.shutdown()


@pytest.fixture
def stand_in_api(client, workspace, api_key, stand_in):
    """The API with an `openai` agent answered by the LLM stand-in, which records what each turn sent."""
    agent = AIAgentFactory(workspace=workspace, provider="openai", base_url=stand_in.url, model="test-model")
    return Api(client, ChannelFactory(workspace=workspace, agent=agent), api_key)


def _text(body: str) -> dict:
    return {**SEED_TEXT, "content": {"text": {"body": body}}}


def _user_contents(request: dict) -> list:
    return [message["content"] for message in request["messages"] if message["role"] == "user"]


def test_a_documents_name_and_text_stay_in_later_turns(stand_in_api, stand_in, httpserver):
    # given: a PDF sent without a `filename`, then a question about it
    url = serve(httpserver, "/docs/invoice.pdf", pdf_bytes(PDF_TEXT))
    assert stand_in_api.post(media_message("DOCUMENT", url, caption="invoice")).status_code == 200

    # when
    assert stand_in_api.post(_text("Is it paid?")).status_code == 200

    # then: the second turn shows the document as its own turn did, its name (from the URL) and text included
    first, second = stand_in.requests
    size = _human_size(len(pdf_bytes(PDF_TEXT)))
    document = f'[Document "invoice.pdf" (application/pdf, {size}): invoice]\nDocument text:\n'
    assert _user_contents(first)[-1].startswith(document)
    assert _user_contents(second)[0] == _user_contents(first)[-1]
    assert PDF_TEXT in _user_contents(second)[0]
    assert _user_contents(second)[1] == "Is it paid?"


def test_an_audios_transcription_and_a_videos_name_stay_in_later_turns(stand_in_api, stand_in, httpserver):
    # given: an agent that transcribes; a voice note and a video
    stand_in_api.channel.agent.transcribe_audio = True
    stand_in_api.channel.agent.transcription_model = "whisper-large-v3"
    stand_in_api.channel.agent.save()
    stand_in.transcript = "Where is my order?"
    audio = serve(httpserver, "/voice/note.wav", wav_bytes())
    video = serve(httpserver, "/clips/unboxing.mp4", mp4_bytes())
    assert stand_in_api.post(media_message("AUDIO", audio)).status_code == 200
    assert stand_in_api.post(media_message("VIDEO", video, caption="It arrived broken")).status_code == 200

    # when
    assert stand_in_api.post(_text("Any news?")).status_code == 200

    # then: one transcription (by the agent's model), kept; both files named in the third turn
    assert stand_in.transcriptions == [{"model": "whisper-large-v3", "file": len(wav_bytes())}]
    third = stand_in.requests[-1]
    assert _user_contents(third) == [
        f'[Audio "note.wav" (audio/x-wav, {_human_size(len(wav_bytes()))})]\nTranscription:\nWhere is my order?',
        f'[Video "unboxing.mp4" (video/mp4, {_human_size(len(mp4_bytes()))}): It arrived broken]',
        "Any news?",
    ]


def test_an_earlier_documents_text_is_cut_to_what_the_history_budget_leaves(stand_in_api, stand_in, httpserver):
    # given: a budget that leaves 7 characters of the earlier document's text
    url = serve(httpserver, "/docs/invoice.pdf", pdf_bytes(PDF_TEXT))
    document = media_message("DOCUMENT", url, filename="invoice.pdf")
    assert stand_in_api.post(document).status_code == 200
    reply = Message.objects.get(direction="OUTBOUND")
    agent = stand_in_api.channel.agent
    agent.history_max_chars = len("Is it paid?") + text_chars(reply.content) + len(url) + len("invoice.pdf") + 7
    agent.save()

    # when
    assert stand_in_api.post(_text("Is it paid?")).status_code == 200

    # then
    earlier, question = _user_contents(stand_in.requests[-1])
    assert earlier.endswith("]\nDocument text:\n" + PDF_TEXT[:7])
    assert question == "Is it paid?"


def test_the_new_documents_text_counts_against_the_history_budget(stand_in_api, stand_in, httpserver):
    # given: an earlier text, and a budget the new document's text and content fill but for 2 characters
    assert stand_in_api.post(_text("Hello")).status_code == 200
    url = serve(httpserver, "/docs/invoice.pdf", pdf_bytes(PDF_TEXT))
    document = media_message("DOCUMENT", url, filename="invoice.pdf")
    agent = stand_in_api.channel.agent
    agent.history_max_chars = len(url) + len("invoice.pdf") + len(PDF_TEXT) + 2
    agent.save()

    # when
    assert stand_in_api.post(document).status_code == 200

    # then: "Hello" (5 characters) and its answer no longer fit
    [only] = _user_contents(stand_in.requests[-1])
    assert only.endswith("Document text:\n" + PDF_TEXT)
    # the instructions, the contact's name and attributes, then the one turn that fits
    assert [message["role"] for message in stand_in.requests[-1]["messages"]] == ["system", "system", "user"]
