"""The body's size limit holds however the body arrives; odd bodies and headers are 400s, never 500s."""

import io
import json
import uuid

import pytest

from api.edge.views import MAX_JSON_DEPTH
from api.flow.idempotency import request_fingerprint
from config.exception_handler import error_body
from contacts.models import Contact
from conversations.models import Message
from tests.conftest import SEED_TEXT, error_of

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


# --- text the database cannot hold, and bodies that are not UTF-8 -------------------------------------------

TEXT_BODY = '"content": {"text": {"body": "hi"}}'
IMAGE = '"type": "IMAGE", "contactIdentifier": "a", "content": {"image": '
DOCUMENT = '"type": "DOCUMENT", "contactIdentifier": "a", "content": {"document": '


def bad_text_bodies(e: str) -> list[tuple[str, str, bool]]:
    """Bodies with the JSON escape `e` in each place a string can be: each known field, an unknown key or
    value at every level, a list item. Each with the field `details` must name, and whether it is in a key."""
    return [
        (f'{{"type": "TEXT", "contactIdentifier": "a", {TEXT_BODY}, "x{e}": 1}}', "body", True),
        (f'{{"type": "TEXT", "contactIdentifier": "a", {TEXT_BODY}, "extra": "x{e}"}}', "extra", False),
        (f'{{"type": "TEXT", "contactIdentifier": "a", {TEXT_BODY}, "extra": ["ok", "x{e}"]}}', "extra[1]", False),
        (
            f'{{"type": "TEXT", "contactIdentifier": "a", "content": {{"text": {{"body": "hi", "x{e}": 1}}}}}}',
            "content.text",
            True,
        ),
        (f'{{"type": "TEXT", "contactIdentifier": "a", "content": {{"x{e}": {{"body": "hi"}}}}}}', "content", True),
        (
            f'{{"type": "TEXT", "contactIdentifier": "a", "content": {{"text": {{"body": "h{e}i"}}}}}}',
            "content.text.body",
            False,
        ),
        (f'{{"type": "TE{e}XT", "contactIdentifier": "a", {TEXT_BODY}}}', "type", False),
        (f'{{"type": "TEXT", "contactIdentifier": "a{e}", {TEXT_BODY}}}', "contactIdentifier", False),
        (f'{{"type": "TEXT", "contactIdentifier": "a", "contactName": "{e}", {TEXT_BODY}}}', "contactName", False),
        (f'{{{IMAGE}{{"url": "https://example.com/a.png", "caption": "x{e}"}}}}}}', "content.image.caption", False),
        (f'{{{IMAGE}{{"url": "https://example.com/a{e}.png"}}}}}}', "content.image.url", False),
        (
            f'{{{DOCUMENT}{{"url": "https://example.com/a.pdf", "filename": "a{e}.pdf"}}}}}}',
            "content.document.filename",
            False,
        ),
    ]


def cases(bodies: list[tuple[str, str, bool]]) -> list:
    return [pytest.param(*body, id=body[1] + ("-key" if body[2] else "")) for body in bodies]


def assert_refused_at(response, where: str, reason: str):
    assert response.status_code == 400, response.content
    response.content.decode("utf-8")  # the error body itself is valid UTF-8
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert where in error["message"]
    assert error["details"] == {where: reason}


@pytest.mark.parametrize(("raw", "where", "in_key"), cases(bad_text_bodies("\\ud800") + bad_text_bodies("\\uDFFF")[:2]))
def test_a_lone_surrogate_anywhere_in_the_body_is_400_naming_where_without_repeating_it(api, raw, where, in_key):
    response = api.post(raw=raw)

    assert_refused_at(response, where, ("a field name " if in_key else "") + "contains an unpaired UTF-16 surrogate")
    text = response.content.decode().lower()
    assert "\\ud800" not in text and "\\udfff" not in text


@pytest.mark.parametrize(("raw", "where", "in_key"), cases(bad_text_bodies("\\u0000")))
def test_nul_anywhere_in_the_body_is_400_and_nothing_is_stored(api, raw, where, in_key):
    """PostgreSQL text cannot hold U+0000: refused before anything reaches the database (on SQLite too)."""
    before = (Contact.objects.count(), Message.objects.count())

    response = api.post(raw=raw)

    assert_refused_at(response, where, ("a field name " if in_key else "") + "contains U+0000 (NUL)")
    assert (Contact.objects.count(), Message.objects.count()) == before


def test_a_surrogate_pair_escape_is_one_character_and_accepted(api):
    response = api.post(raw=json.dumps({**SEED_TEXT, "contactName": "Smile \U0001f600"}, ensure_ascii=True))

    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    ("raw", "byte"),
    [
        # a surrogate encoded as UTF-8 (CESU-style): json.loads on bytes would decode it with surrogatepass
        (json.dumps({**SEED_TEXT, "extra": "X"}).encode().replace(b'"X"', b'"\xed\xa0\x80"'), None),
        (
            json.dumps({**SEED_TEXT, "contactName": "\xe9"}, ensure_ascii=False).encode("latin-1"),
            None,
        ),  # Latin-1, not UTF-8
        (json.dumps(SEED_TEXT).encode("utf-16"), 0),  # json.loads on bytes would take UTF-16 too
        (json.dumps(SEED_TEXT).encode("utf-32"), 0),
    ],
)
def test_a_body_that_is_not_utf8_is_400(api, raw, byte):
    response = api.post(raw=raw)

    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert error["details"]["body"].startswith("not UTF-8 at byte ")
    if byte is not None:
        assert error["details"]["body"] == f"not UTF-8 at byte {byte}"


def test_a_utf8_body_with_a_byte_order_mark_is_read(api):
    assert api.post(raw=b"\xef\xbb\xbf" + json.dumps(SEED_TEXT).encode()).status_code == 200


def test_the_fingerprint_and_the_error_body_take_any_string():
    """Behind the view's check: neither ever raises on a lone surrogate."""
    assert len(request_fingerprint(method="POST", path="/p", channel_id="ch", body={"\ud800": "\udfff"})) == 64
    body = error_body(code="invalid_request", message="Bad.", details={"\ud800": "x"})
    assert json.loads(body.decode("ascii"))["error"]["details"] == {"\ud800": "x"}


# --- nesting ------------------------------------------------------------------------------------------------


def nested_body(depth: int) -> str:
    """A TEXT body whose `content.text.body` is arrays nested so that the deepest bracket is `depth` deep."""
    arrays = depth - 3  # the body object, content and text
    return json.dumps({**SEED_TEXT, "content": {"text": {"body": "@"}}}).replace('"@"', "[" * arrays + "]" * arrays)


def test_a_body_nested_at_the_limit_is_validated_as_usual(api):
    response = api.post(raw=nested_body(MAX_JSON_DEPTH))

    assert response.status_code == 400
    assert error_of(response)["details"] == {"content.text.body": "Send a string."}


def test_every_depth_past_the_limit_is_400_up_to_the_parsers_recursion(api):
    """Today's parser and fingerprint recurse: some depth near 900 passed json.loads and then broke the
    fingerprint's encoder (500). Every depth from the limit to beyond the recursion limit is one 400."""
    statuses = {}
    for depth in [*range(MAX_JSON_DEPTH + 1, MAX_JSON_DEPTH + 4), 50, 500, *range(860, 1010)]:
        response = api.post(raw=nested_body(depth))
        statuses.setdefault((response.status_code, json.dumps(response.json()["error"]["details"])), []).append(depth)

    assert list(statuses) == [(400, json.dumps({"body": f"nested deeper than {MAX_JSON_DEPTH} levels"}))], {
        key: (depths[0], depths[-1], len(depths)) for key, depths in statuses.items()
    }


def test_objects_nested_past_the_limit_in_an_unknown_field_are_400(api):
    raw = json.dumps({**SEED_TEXT, "extra": "@"}).replace('"@"', '{"a": ' * 40 + "1" + "}" * 40)

    response = api.post(raw=raw)

    assert response.status_code == 400
    assert error_of(response)["details"] == {"body": f"nested deeper than {MAX_JSON_DEPTH} levels"}


def test_brackets_inside_strings_do_not_count(api):
    body = '[{"\\"' * 100 + "]}" * 100
    response = api.post({**SEED_TEXT, "content": {"text": {"body": body}}, "contactName": "[[[[[[[[[[[[[[[["})

    assert response.status_code == 200, response.content


# --- path and headers: no input reaches a query the database would refuse ------------------------------------


@pytest.mark.parametrize("channel_id", ["ch_%00", "%00", "{pk}%00", "{pk}%00x"])
@pytest.mark.parametrize("idempotency_key", [None, "nul-in-path"])
def test_a_nul_in_the_channel_id_is_404_channel_not_found(api, channel, channel_id, idempotency_key):
    response = api.post(SEED_TEXT, channel_id=channel_id.format(pk=channel.pk), idempotency_key=idempotency_key)

    assert response.status_code == 404, response.content
    error = error_of(response)
    assert error["code"] == "channel_not_found"
    assert "\x00" in error["details"]["channelId"]  # the id as sent, JSON-escaped
    assert Message.objects.count() == 0


@pytest.mark.parametrize(
    "key",
    [
        "ab\x00cd.secret",  # NUL in the prefix: the prefix is looked up
        "{prefix}\x00.secret",
        "{prefix}.\x00{secret}",
        "\x00{prefix}.{secret}",
        "ab\u00e9.secret",  # non-ASCII (a header may carry Latin-1)
        "{prefix}.{secret}\u00e9",
        "\ud800.secret",  # a lone surrogate: not even encodable
        "{prefix}.\udfff",
        "{prefix}.{secret}\x07",
    ],
)
def test_an_api_key_with_nul_or_non_ascii_is_401_invalid_api_key(api, api_key, key):
    prefix, secret = api_key.split(".")

    response = api.post(SEED_TEXT, key=key.format(prefix=prefix, secret=secret))

    assert response.status_code == 401, response.content
    assert error_of(response) == {
        "code": "invalid_api_key",
        "message": error_of(response)["message"],
        "details": {"header": "X-API-Key"},
    }


@pytest.mark.parametrize("request_id", ["a\x00b", "caf\u00e9", "\ud800", "x" * 129, "a b"])
def test_an_odd_request_id_is_replaced_by_a_fresh_one(api, request_id):
    response = api.post(SEED_TEXT, HTTP_X_REQUEST_ID=request_id)

    assert response.status_code == 200, response.content
    assert str(uuid.UUID(response["X-Request-ID"])) == response["X-Request-ID"]
