"""The body's size limit holds however the body arrives; odd bodies and headers are 400s, never 500s."""

import io
import json

import pytest

from tests.conftest import SEED_TEXT

URL = "/api/v1/channels/{}/messages"


def chunked(client, channel, key, data: bytes):
    """As gunicorn hands Django a `Transfer-Encoding: chunked` body: no Content-Length, the decoded stream
    marked `wsgi.input_terminated`."""
    return client.generic(
        "POST",
        URL.format(channel.pk),
        data=b"",
        HTTP_X_API_KEY=key,
        HTTP_TRANSFER_ENCODING="chunked",
        CONTENT_TYPE="application/json",
        **{"wsgi.input": io.BytesIO(data), "wsgi.input_terminated": True},
    )


def test_a_chunked_body_over_the_limit_is_413(client, channel, api_key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = json.dumps({**SEED_TEXT, "content": {"text": {"body": "x" * 2000}}}).encode()

    response = chunked(client, channel, api_key, body)

    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "payload_too_large",
        "details": {"limitBytes": 1024},
        "message": response.json()["error"]["message"],
    }


def test_a_chunked_body_under_the_limit_is_read(client, channel, api_key):
    response = chunked(client, channel, api_key, json.dumps(SEED_TEXT).encode())

    assert response.status_code == 200, response.content


def test_a_body_over_the_limit_with_content_length_is_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = api.post({**SEED_TEXT, "content": {"text": {"body": "x" * 2000}}})

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 5000 + "]" * 5000,  # nested past the parser's recursion limit
        '{"a": ' + "[" * 5000 + "]" * 5000 + "}",
        "1" * 5000,  # an integer past Python's digit limit
        '{"type": "TEXT", "contactIdentifier": "a", "content": {"text": {"body": "\\ud800"}}}',  # a lone surrogate
        '{"type": "TEXT", "contactIdentifier": "a\\u0000b", "content": {"text": {"body": "hi"}}}',
        '{"type": ["TEXT"], "contactIdentifier": "a", "content": {"text": {"body": "hi"}}}',
        '{"type": "TEXT", "contactIdentifier": "a", "content": {"text": {"body": NaN}}}',
    ],
)
def test_odd_json_is_400_not_500(api, raw):
    response = api.post(raw=raw)

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_request"


def test_two_different_idempotency_keys_are_400(api):
    response = api.post(SEED_TEXT, idempotency_key="key-a", HTTP_IDEMPOTENCY_KEY="key-b")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_idempotency_key"


def test_an_invalid_idempotency_key_is_refused_in_either_header(api):
    response = api.post(SEED_TEXT, idempotency_key="fine", HTTP_IDEMPOTENCY_KEY="not\tfine")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_idempotency_key"


def test_the_same_key_in_both_headers_is_one_key(api):
    first = api.post(SEED_TEXT, idempotency_key="same", HTTP_IDEMPOTENCY_KEY="same")
    replay = api.post(SEED_TEXT, idempotency_key="same")

    assert first.status_code == 200
    assert replay["Idempotent-Replayed"] == "true" and replay.content == first.content
