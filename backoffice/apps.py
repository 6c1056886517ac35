from django.apps import AppConfig


class BackofficeConfig(AppConfig):
    """The operators' back office: the admin site with its dashboard and exports, and the daily rollup of
    message outcomes the dashboard draws (fed by the messages endpoint's record and failure paths)."""

    name = "backoffice"
    verbose_name = "Back office"
