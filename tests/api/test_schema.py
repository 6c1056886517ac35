"""The OpenAPI document: valid, complete for the messages endpoint, and true to what the API answers."""

import copy
import json
import re

import jsonschema
import pytest
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema

from api.edge.schema import CLOSE_EXAMPLE, REPLY_EXAMPLE, SPEC_EXAMPLES
from channels_app.models import Team
from tests.conftest import SEED_TEXT

PATH = "/api/v1/channels/{channelId}/messages"
CONTRACT_STATUSES = {"200", "400", "401", "402", "404", "409", "413", "422", "429", "500", "502", "504"}
TYPES = {"TEXT": "text", "IMAGE": "image", "AUDIO": "audio", "VIDEO": "video", "DOCUMENT": "document"}


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


@pytest.fixture(scope="module")
def operation(schema):
    return schema["paths"][PATH]["post"]


def resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _as_json_schema(node, *, strict: bool):
    """OpenAPI 3.0's schema objects as JSON Schema: `nullable: true` becomes "or null". With `strict`, an
    object schema that does not say otherwise takes no properties besides its own, so a field the
    document does not name fails validation."""
    if isinstance(node, list):
        return [_as_json_schema(item, strict=strict) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _as_json_schema(value, strict=strict) for key, value in node.items()}
    if strict and "properties" in node and "additionalProperties" not in node:
        node["additionalProperties"] = False
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


def validator(schema: dict, component: str, *, strict: bool = False) -> jsonschema.Draft7Validator:
    """A JSON Schema validator for one component; its `$ref`s resolve inside the document."""
    components = _as_json_schema(copy.deepcopy(schema["components"]), strict=strict)
    root = {"$ref": f"#/components/schemas/{component}", "components": components}
    return jsonschema.Draft7Validator(root)


def test_schema_is_valid_openapi_3(schema):
    validate_schema(schema)  # raises on an invalid document
    assert schema["openapi"].startswith("3.")


def test_schema_endpoint_serves_the_document(client, db):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    served = json.loads(response.content)
    validate_schema(served)
    assert PATH in served["paths"]


def test_docs_are_swagger_ui_from_our_own_static_files(client, db):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page
    assert not re.search(r"cdn|unpkg|jsdelivr|cdnjs", page, re.IGNORECASE)
    assets = re.findall(r'(?:src|href)="(/static/drf_spectacular_sidecar/[^"]+)"', page)
    assert assets, page
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200, asset
        b"".join(served.streaming_content)
        served.close()


def test_request_body_is_a_oneof_with_a_discriminator_per_type(schema, operation):
    body = operation["requestBody"]
    assert body["required"] is True
    union = resolve(schema, body["content"]["application/json"]["schema"])

    assert len(union["oneOf"]) == len(TYPES)
    assert union["discriminator"]["propertyName"] == "type"
    mapping = union["discriminator"]["mapping"]
    assert set(mapping) == set(TYPES)
    assert sorted(mapping.values()) == sorted(ref["$ref"] for ref in union["oneOf"])
    for message_type, key in TYPES.items():
        variant = resolve(schema, {"$ref": mapping[message_type]})
        assert set(variant["required"]) == {"type", "contactIdentifier", "content"}
        assert resolve(schema, variant["properties"]["type"]["allOf"][0])["enum"] == [message_type]
        content = resolve(schema, variant["properties"]["content"])
        assert content["required"] == [key] and list(content["properties"]) == [key]
        assert content["additionalProperties"] is False
        assert resolve(schema, content["properties"][key])["additionalProperties"] is False


def test_request_examples_are_the_specs_and_match_their_type(schema, operation):
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    values = [example["value"] for example in examples.values()]
    check = validator(schema, "InboundMessageRequest")

    assert sorted(values, key=lambda v: v["type"]) == sorted(SPEC_EXAMPLES.values(), key=lambda v: v["type"])
    for value in values:
        check.validate(value)
        # oneOf: exactly one variant takes it, the one its type names
        matching = [
            name for name in (f"{t.title()}MessageRequest" for t in TYPES) if validator(schema, name).is_valid(value)
        ]
        assert matching == [f"{value['type'].title()}MessageRequest"]


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "TEXT", "contactIdentifier": "a@b.c", "content": {"image": {"url": "https://example.com/a.jpg"}}},
        {"type": "TEXT", "contactIdentifier": "a@b.c", "content": {"text": {"body": "hi", "bdy": "typo"}}},
        {"type": "TEXT", "contactIdentifier": "", "content": {"text": {"body": "hi"}}},
        {"type": "TEXT", "contactIdentifier": "a@b.c", "content": {"text": {"body": "   "}}},
        {"type": "TEXT", "contactIdentifier": "a@b.c", "content": {"text": {"body": "x" * 4097}}},
        {"type": "STICKER", "contactIdentifier": "a@b.c", "content": {"text": {"body": "hi"}}},
        {**SEED_TEXT, "contactId": "ct_1"},  # an unknown top-level field
        {**SEED_TEXT, "metadata": {f"k{n}": "v" for n in range(17)}},
        {**SEED_TEXT, "metadata": {"plan": 3}},
        {**SEED_TEXT, "metadata": {"plan": {"nested": "x"}}},
        {**SEED_TEXT, "metadata": {"plan": "x" * 513}},
        {**SEED_TEXT, "metadata": ["plan"]},
        {**SEED_TEXT, "contactIdentifier": None},
    ],
)
def test_schema_refuses_what_the_api_refuses(schema, api, bad):
    assert not validator(schema, "InboundMessageRequest").is_valid(bad)
    assert api.post(bad).status_code == 400


@pytest.mark.parametrize(
    "good",
    [
        {**SEED_TEXT, "contactName": None, "metadata": None},
        {**SEED_TEXT, "metadata": {f"k{n}": "v" * 512 for n in range(16)}},
        {**SEED_TEXT, "content": {"text": {"body": "  indented\n"}}},
        {
            "type": "DOCUMENT",
            "contactIdentifier": "a@b.c",
            "content": {"document": {"url": "https://a.example/d.pdf", "filename": None, "caption": None}},
        },
    ],
)
def test_schema_accepts_nulls_metadata_and_whitespace_as_the_api_does(schema, good):
    assert validator(schema, "InboundMessageRequest").is_valid(good)


def test_the_path_parameter_is_the_specs_channel_id(operation):
    assert [p["name"] for p in operation["parameters"] if p["in"] == "path"] == ["channelId"]


def test_documented_limits_are_the_enforced_ones(schema):
    components = schema["components"]["schemas"]
    text = components["TextMessageRequest"]["properties"]
    document = components["DocumentContentRequest"]["properties"]

    assert (text["contactIdentifier"]["minLength"], text["contactIdentifier"]["maxLength"]) == (1, 320)
    assert text["contactName"]["maxLength"] == 200
    assert (
        components["TextContentRequest"]["properties"]["body"]["minLength"],
        components["TextContentRequest"]["properties"]["body"]["maxLength"],
    ) == (1, 4096)
    assert (document["url"]["maxLength"], document["filename"]["maxLength"], document["caption"]["maxLength"]) == (
        2048,
        255,
        1024,
    )
    assert "64 KiB" in schema["paths"][PATH]["post"]["description"]


def test_every_contract_status_is_documented_with_its_body(schema, operation):
    responses = operation["responses"]

    assert CONTRACT_STATUSES <= set(responses)
    assert responses["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/MessageResult"}
    for status in CONTRACT_STATUSES - {"200"}:
        content = responses[status]["content"]["application/json"]
        assert content["schema"] == {"$ref": "#/components/schemas/ErrorResult"}, status
        for example in content["examples"].values():
            validator(schema, "ErrorResult").validate(example["value"])
    assert responses["429"]["headers"]["Retry-After"]["required"] is True
    assert "Retry-After" in responses["409"]["headers"]
    assert "Idempotent-Replayed" in responses["200"]["headers"]
    assert all("X-Request-ID" in response["headers"] for response in responses.values())


def test_api_key_security_scheme_and_idempotency_headers(schema, operation):
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"] == {
        **schema["components"]["securitySchemes"]["ApiKeyAuth"],
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    assert operation["security"] == [{"ApiKeyAuth": []}]
    headers = {p["name"]: p for p in operation["parameters"] if p["in"] == "header"}
    for name in ("X-Idempotency-Key", "Idempotency-Key"):
        assert headers[name]["schema"]["maxLength"] == 255
        assert not headers[name].get("required", False)


def test_real_responses_match_the_documented_bodies(api, channel, schema):
    ok = api.post(SEED_TEXT)
    channel.team = Team.objects.create(workspace=channel.workspace, name="Support")
    channel.save()
    with_team = api.post({**SEED_TEXT, "metadata": {"plan": "gold"}})
    refused = api.post({**SEED_TEXT, "content": {"text": {"body": ""}}})
    missing_key = api.post(SEED_TEXT, key="")

    assert ok.status_code == with_team.status_code == 200
    # strict: every field of the real body is one the document names, with the documented type
    validator(schema, "MessageResult", strict=True).validate(ok.json())
    validator(schema, "MessageResult", strict=True).validate(with_team.json())
    assert with_team.json()["conversation"]["teamName"] == "Support"
    for response, status in ((refused, 400), (missing_key, 401)):
        assert response.status_code == status
        validator(schema, "ErrorResult").validate(response.json())


def test_unknown_urls_answer_the_json_error_body(client, db):
    response = client.get("/api/v1/nothing-here")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "not_found"


def _fields(value, path=""):
    """Every field path of a JSON value, list items as `[]`: {"a": {"b": 1}, "c": [{"d": 2}]} -> a, a.b, c, c[].d."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}.{key}" if path else key
            yield from _fields(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for item in value:
            yield from _fields(item, f"{path}[]")


def _documented(schema: dict, node: dict, path: str = "") -> set[str]:
    """Every field path the document gives a response component, following $ref, allOf, anyOf and oneOf."""
    node = resolve(schema, node)
    paths: set[str] = set()
    for combined in ("allOf", "anyOf", "oneOf"):
        for part in node.get(combined, []):
            paths |= _documented(schema, part, path)
    if node.get("type") == "array":
        paths |= _documented(schema, node["items"], f"{path}[]")
    for key, child in node.get("properties", {}).items():
        name = f"{path}.{key}" if path else key
        paths.add(name)
        paths |= _documented(schema, child, name)
    return paths


def _may_be_null(node: dict) -> bool:
    return node.get("nullable", False) or any("NullEnum" in str(part) for part in node.get("oneOf", []))


def test_every_field_of_a_real_success_body_is_in_the_schema_and_required(api, schema):
    body = api.post({**SEED_TEXT, "metadata": {"plan": "gold"}}).json()

    documented = _documented(schema, {"$ref": "#/components/schemas/MessageResult"})

    assert set(_fields(body)) <= documented, set(_fields(body)) - documented
    # and each is always sent: required (nullable where it may be null)
    components = schema["components"]["schemas"]
    for name in ("MessageResult", "Conversation", "Assignee", "AiMessage", "Usage"):
        assert set(components[name]["required"]) == set(components[name]["properties"]), name
    nullable = {"teamId", "teamName", "closedAt", "closeReason"}
    assert {key for key, value in components["Conversation"]["properties"].items() if _may_be_null(value)} == nullable
    assert _may_be_null(components["AiMessage"]["properties"]["channel_message_id"])


def test_the_documented_example_reply_has_a_real_responses_fields(api, schema, operation):
    body = api.post({**SEED_TEXT, "content": {"text": {"body": "Can I get a refund?"}}}).json()  # with sources
    examples = operation["responses"]["200"]["content"]["application/json"]["examples"]

    assert [example["value"] for example in examples.values()] == [REPLY_EXAMPLE]
    assert sorted(_fields(REPLY_EXAMPLE)) == sorted(_fields(body))
    validator(schema, "MessageResult", strict=True).validate(REPLY_EXAMPLE)


# --- POST /api/v1/conversations/{conversationId}/close ----------------------------------------------------

CLOSE_PATH = "/api/v1/conversations/{conversationId}/close"


def test_the_close_is_documented_with_its_example_and_errors(schema):
    close = schema["paths"][CLOSE_PATH]["post"]

    assert close["operationId"] == "conversation_close"
    assert "requestBody" not in close
    assert {"200", "401", "404", "429"} <= set(close["responses"])
    assert close["security"] == schema["paths"][PATH]["post"]["security"]
    (example,) = close["responses"]["200"]["content"]["application/json"]["examples"].values()
    assert example["value"] == CLOSE_EXAMPLE
    validator(schema, "ConversationCloseResult", strict=True).validate(CLOSE_EXAMPLE)
    assert "conversation_not_found" in close["responses"]["404"]["description"]


def test_a_real_close_matches_the_documented_body_and_example(api, client, api_key, schema):
    conversation_id = api.post(SEED_TEXT).json()["conversationId"]

    closed = client.post(f"/api/v1/conversations/{conversation_id}/close", HTTP_X_API_KEY=api_key)
    missing = client.post("/api/v1/conversations/cv_nope/close", HTTP_X_API_KEY=api_key)

    validator(schema, "ConversationCloseResult", strict=True).validate(closed.json())
    assert sorted(_fields(CLOSE_EXAMPLE)) == sorted(_fields(closed.json()))
    validator(schema, "ErrorResult").validate(missing.json())


def test_the_readme_shows_the_documented_close_example():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("## Conversations", 1)[1].split("```json", 1)[1].split("```", 1)[0]

    assert json.loads(block) == CLOSE_EXAMPLE


# --- names and 405s -----------------------------------------------------------------------------------------


def test_no_component_has_a_hash_name_and_the_message_types_are_one_enum(schema):
    components = schema["components"]["schemas"]

    # drf-spectacular's fallbacks: a hash suffix (`Type0ecEnum`) when two fields share a name, `NullEnum`
    assert [name for name in components if re.search(r"[0-9a-f]{3}Enum$|^NullEnum$", name)] == []
    assert components["MessageTypeEnum"]["enum"] == list(TYPES)
    for component in ("AiMessage", "MessageItem"):
        assert components[component]["properties"]["type"] == {"$ref": "#/components/schemas/MessageTypeEnum"}
    # a nullable enum says so, and null validates
    close_reason = components["Conversation"]["properties"]["closeReason"]
    assert close_reason["nullable"] is True
    components = _as_json_schema(copy.deepcopy(schema["components"]), strict=False)
    check = jsonschema.Draft7Validator({"components": components, **_as_json_schema(close_reason, strict=False)})
    check.validate(None)
    check.validate("api")


def test_every_operation_documents_405_with_the_methods_its_url_takes(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            documented = operation["responses"]["405"]
            assert documented["headers"]["Allow"]["required"] is True, (path, method)
            content = documented["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/ErrorResult"}
            [example] = content["examples"].values()
            validator(schema, "ErrorResult").validate(example["value"])
            assert example["value"]["error"]["details"]["allowed"] == [name.upper() for name in operations]
    assert "X-Request-ID" in schema["paths"][PATH]["post"]["responses"]["405"]["headers"]


@pytest.mark.parametrize(
    ("method", "url", "allowed"),
    [
        ("get", "/api/v1/channels/ch_x/messages", ["POST"]),
        ("get", "/api/v1/conversations/cv_x/close", ["POST"]),
        ("post", "/api/v1/contacts", ["GET"]),
        ("put", "/api/v1/contacts/ct_x", ["GET", "PATCH", "DELETE"]),
        ("delete", "/api/v1/usage", ["GET"]),
    ],
)
def test_a_real_405_says_which_methods_the_url_takes_as_documented(client, api_key, schema, method, url, allowed):
    response = getattr(client, method)(url, HTTP_X_API_KEY=api_key)

    assert response.status_code == 405
    body = response.json()
    validator(schema, "ErrorResult").validate(body)
    assert body["error"] == {
        "code": "method_not_allowed",
        "message": f"This URL does not take {method.upper()}. Use {' or '.join(allowed)}.",
        "details": {"method": method.upper(), "allowed": allowed},
    }
    assert [name.strip() for name in response["Allow"].split(",")][: len(allowed)] == allowed
