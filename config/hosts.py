"""The Host header, before anything else reads it.

Django checks the Host against ALLOWED_HOSTS when a middleware or view first calls `request.get_host()`
(CommonMiddleware does, on every request) and answers a mismatch with its own HTML page. Here, early in
MIDDLEWARE:
- `/healthz` and `/readyz` answer whatever the Host: load balancers and orchestrators probe by IP address,
  which is rarely a configured host name, and the probes reveal nothing;
- any other request with a host that is not allowed gets the error body every other error has
  (400 `invalid_host`), not Django's HTML.
"""

from django.core.exceptions import DisallowedHost

from config.errors import InvalidHost
from config.exception_handler import error_response
from config.health import healthz, readyz
from config.logs import log_bind

_PROBES = {"/healthz": healthz, "/readyz": readyz}
_HOST_ECHO_MAX = 255  # the offending value goes back in `details`, bounded


class HostMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        probe = _PROBES.get(request.path_info)
        if probe is not None:
            return probe(request)
        try:
            request.get_host()
        except DisallowedHost:
            log_bind(error_code=InvalidHost.code)
            return error_response(
                InvalidHost(details={"header": "Host", "host": request.META.get("HTTP_HOST", "")[:_HOST_ECHO_MAX]})
            )
        return self.get_response(request)
