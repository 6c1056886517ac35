"""The messages endpoint's request body. JSON is camelCase on the wire; `source=` maps it to snake_case."""

from django.core.validators import URLValidator
from rest_framework import serializers

MESSAGE_TYPES = ("TEXT", "IMAGE", "AUDIO", "VIDEO", "DOCUMENT")
# Documented limits (README "Limits"). An e-mail address is at most 320 characters (RFC 3696 errata).
CONTACT_IDENTIFIER_MAX = 320
CONTACT_NAME_MAX = 200
TEXT_BODY_MAX = 4096  # WhatsApp's limit for a text message; long enough for any chat turn
CAPTION_MAX = 1024
FILENAME_MAX = 255
URL_MAX = 2048


class _StrictObject(serializers.Serializer):
    """Refuses keys it does not know, so a typo ("caption " or "bdy") is an error and not silently lost."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {key: [f"Unknown field. Allowed: {', '.join(sorted(self.fields))}."] for key in unknown}
                )
        return super().to_internal_value(data)


class _StringField(serializers.CharField):
    """A JSON string, nothing else: DRF's CharField would turn 42 or true into "42" and "True"."""

    default_error_messages = {"not_a_string": "Send a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


def _text(max_length: int, *, required: bool = True) -> serializers.CharField:
    return _StringField(max_length=max_length, required=required, allow_blank=not required, trim_whitespace=True)


class _PublicUrlField(_StringField):
    default_error_messages = {"invalid": "Send an absolute http:// or https:// URL that anyone can download."}

    def __init__(self, **kwargs):
        super().__init__(max_length=URL_MAX, **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        try:
            URLValidator(schemes=["http", "https"])(value)
        except Exception:
            self.fail("invalid")
        return value


class TextContent(_StrictObject):
    body = _text(TEXT_BODY_MAX)


class ImageContent(_StrictObject):
    url = _PublicUrlField()
    caption = _text(CAPTION_MAX, required=False)


class AudioContent(_StrictObject):
    url = _PublicUrlField()


class VideoContent(_StrictObject):
    url = _PublicUrlField()
    caption = _text(CAPTION_MAX, required=False)


class DocumentContent(_StrictObject):
    url = _PublicUrlField()
    filename = _text(FILENAME_MAX, required=False)
    caption = _text(CAPTION_MAX, required=False)


CONTENT_SERIALIZERS = {
    "TEXT": ("text", TextContent),
    "IMAGE": ("image", ImageContent),
    "AUDIO": ("audio", AudioContent),
    "VIDEO": ("video", VideoContent),
    "DOCUMENT": ("document", DocumentContent),
}


class InboundMessageSerializer(serializers.Serializer):
    type = serializers.ChoiceField(
        choices=MESSAGE_TYPES, error_messages={"invalid_choice": "Use one of TEXT, IMAGE, AUDIO, VIDEO, DOCUMENT."}
    )
    contactIdentifier = _text(CONTACT_IDENTIFIER_MAX)  # camelCase: the wire name
    contactName = _text(CONTACT_NAME_MAX, required=False)
    content = serializers.DictField(error_messages={"not_a_dict": 'Send an object, e.g. {{"text": {{"body": "Hi"}}}}.'})

    def validate(self, attrs):
        key, serializer_class = CONTENT_SERIALIZERS[attrs["type"]]
        content = attrs["content"]
        others = sorted(set(content) - {key})
        if key not in content or others:
            raise serializers.ValidationError(
                {
                    "content": [
                        f'For type {attrs["type"]} send content as {{"{key}": {{...}}}}'
                        + (f"; remove {', '.join(others)}." if others else ".")
                    ]
                }
            )
        inner = serializer_class(data=content[key])
        if not inner.is_valid():
            raise serializers.ValidationError({"content": {key: inner.errors}})
        # Keep only what was sent, in the request's own shape (empty optional strings dropped).
        attrs["content"] = {key: {k: v for k, v in inner.validated_data.items() if v != ""}}
        return attrs
