"""The JSON Schemas of HTTP tools' parameters (README "HTTP tools"): the strict subset an operator may give
(`schema_errors`), the form the model is offered (`strict_schema`: OpenAI's strict function tools) and the
check of the arguments a model sends (`arguments_errors`) before anything is called."""

from typing import Any

_TYPES = {"string", "number", "integer", "boolean", "array", "object"}
_KEYS = {"type", "description", "enum", "properties", "required", "items", "additionalProperties"}
MAX_DEPTH = 5


def schema_errors(schema: Any, *, path: str = "parameters", depth: int = 0) -> list[str]:
    """What is outside the strict subset (string, number, integer, boolean, enum, array, object, required;
    no $ref), each as `path: why`; [] when the schema is in it. The top level is an object."""
    if not isinstance(schema, dict):
        return [f"{path}: send a JSON Schema object"]
    if depth > MAX_DEPTH:
        return [f"{path}: nested deeper than {MAX_DEPTH} levels"]
    errors = [f"{path}: {key!r} is not in the strict subset" for key in sorted(set(schema) - _KEYS)]
    kind = schema.get("type")
    if depth == 0 and kind != "object":
        errors.append(f'{path}: the parameters are an object ("type": "object")')
    if kind not in _TYPES and "enum" not in schema:
        errors.append(f"{path}: type must be one of {', '.join(sorted(_TYPES))}")
    if "enum" in schema and (
        not isinstance(schema["enum"], list)
        or not schema["enum"]
        or not all(isinstance(value, (str, int, float, bool)) for value in schema["enum"])
    ):
        errors.append(f"{path}: enum is a non-empty list of strings, numbers or booleans")
    if "description" in schema and not isinstance(schema["description"], str):
        errors.append(f"{path}: description is a string")
    if kind == "object":
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            return [*errors, f"{path}: properties is an object"]
        for name, sub in properties.items():
            errors += schema_errors(sub, path=f"{path}.{name}", depth=depth + 1)
        required = schema.get("required", [])
        if not isinstance(required, list) or not set(required) <= set(properties):
            errors.append(f"{path}: required lists names of its properties")
        if schema.get("additionalProperties", False) is not False:
            errors.append(f"{path}: additionalProperties may only be false")
    elif kind == "array":
        errors += schema_errors(schema.get("items"), path=f"{path}[]", depth=depth + 1)
    return errors


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` as OpenAI's strict mode wants it: every object closed (`additionalProperties: false`) and
    all its properties required, the optional ones as nullable (null: left out, `arguments_clean`)."""
    result = {key: value for key, value in schema.items() if key not in ("properties", "required", "items")}
    if schema.get("type") == "object":
        required = set(schema.get("required", []))
        properties = {}
        for name, sub in schema.get("properties", {}).items():
            strict = strict_schema(sub)
            if name not in required:
                strict = _nullable(strict)
            properties[name] = strict
        result.update(properties=properties, required=list(properties), additionalProperties=False)
    elif schema.get("type") == "array":
        result["items"] = strict_schema(schema.get("items", {}))
    return result


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    result = {**schema, "type": [kind, "null"]} if isinstance(kind, str) else dict(schema)
    if "enum" in result:
        result["enum"] = [*result["enum"], None]
    return result


def arguments_clean(schema: dict[str, Any], arguments: Any, *, path: str = "") -> tuple[Any, list[str]]:
    """The model's `arguments` checked against the operator's `schema`, optional properties sent as null
    left out; returns (the arguments, errors as `path: why`)."""
    where = path or "arguments"
    if "enum" in schema and arguments not in schema["enum"]:
        return arguments, [f"{where}: must be one of {schema['enum']}"]
    kind = schema.get("type")
    checks = {
        "string": lambda v: isinstance(v, str),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }
    if kind in checks and not checks[kind](arguments):
        return arguments, [f"{where}: must be a JSON {kind}"]
    if kind == "array":
        cleaned, errors = [], []
        for index, item in enumerate(arguments):
            value, found = arguments_clean(schema.get("items", {}), item, path=f"{where}[{index}]")
            cleaned.append(value)
            errors += found
        return cleaned, errors
    if kind != "object":
        return arguments, []
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    errors = [f"{where}.{name}: unknown property" for name in sorted(set(arguments) - set(properties))]
    result = {}
    for name, sub in properties.items():
        value = arguments.get(name)
        if value is None:
            if name in required:
                errors.append(f"{where}.{name}: required")
            continue
        result[name], found = arguments_clean(sub, value, path=f"{where}.{name}")
        errors += found
    return result, errors
