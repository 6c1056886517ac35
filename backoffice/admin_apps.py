"""django.contrib.admin with the back office's site as `admin.site` (Django's documented way to replace the
default site), so every app's `@admin.register` lands on it. Its own module: an apps module that imported
AdminConfig would offer Django two default configs for the `backoffice` app."""

from django.contrib.admin.apps import AdminConfig


class BackofficeAdminConfig(AdminConfig):
    default_site = "backoffice.site.BackofficeSite"
