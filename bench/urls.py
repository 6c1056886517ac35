"""Production's URLconf plus scenario 1's reference, the bare view at /api/bench/bare (bench/bare_view.py)."""

from django.urls import path

from bench.bare_view import BenchBareApi
from config.urls import handler404, handler500  # noqa: F401 - the root URLconf names the error views
from config.urls import urlpatterns as project_urlpatterns

urlpatterns = [*project_urlpatterns, path("api/bench/bare", BenchBareApi.as_view())]
