"""Content negotiation that always finds a renderer. The API speaks JSON (and, on the messages endpoint, an
event stream that the view chooses itself), so an `Accept` header that names neither, or an empty one, is
answered in JSON instead of 406: every URL answers the contract's body, whatever the client said it accepts."""

from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation


class JsonFallbackNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            return renderers[0], renderers[0].media_type  # the first: JSONRenderer (REST_FRAMEWORK settings)
