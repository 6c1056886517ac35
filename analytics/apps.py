from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    """The daily rollup of message outcomes (MessageDay): written by the messages endpoint's record and failure
    paths and the clean-up, in their own transactions (analytics.stats), rebuilt by `manage.py stats rebuild`,
    read by the back office's dashboard."""

    name = "analytics"
    verbose_name = "Analytics"
