from django.apps import AppConfig


class BackofficeConfig(AppConfig):
    """The operators' back office: the admin site with its dashboard and exports. The dashboard draws the daily
    rollup of message outcomes, which the analytics app keeps."""

    name = "backoffice"
    verbose_name = "Back office"
