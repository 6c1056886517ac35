from django.contrib import admin
from django.contrib.staticfiles.views import serve as static_serve
from django.http import HttpResponse
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.exception_handler import require_safe
from config.health import healthz, readyz


@require_safe
def favicon(request) -> HttpResponse:
    """Browsers ask every site for /favicon.ico: no icon, and no 404 in the admin's logs and consoles; the
    answer is cached for a day."""
    return HttpResponse(status=204, headers={"Cache-Control": "public, max-age=86400"})


urlpatterns = [
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/", include("api.edge.urls")),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("favicon.ico", favicon, name="favicon"),
    # django-prometheus's exporter. Unauthenticated, like every Prometheus endpoint: keep it off the public
    # load balancer (README "Production").
    path("", include("django_prometheus.urls")),
    # The admin's and Swagger UI's files (drf-spectacular-sidecar), from the installed apps, so `make serve`
    # needs no web server or collectstatic in front; they are a few small files that browsers cache.
    re_path(r"^static/(?P<path>.+)$", static_serve, {"insecure": True}),
]
# An unknown URL or a failure outside DRF answers the contract's JSON error body too, not an HTML page.
handler404 = "config.exception_handler.not_found_view"
handler500 = "config.exception_handler.server_error_view"
