import os

from django.apps import apps
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
application = get_wsgi_application()

# What an app's first request would otherwise wait for is loaded now, with the web process: each app that
# has some says so in its AppConfig's `preload()` (the conversations app: the OpenAI SDK, about a second to
# import). Only here, so manage.py commands and Celery workers do not pay for it.
for app_config in apps.get_app_configs():
    preload = getattr(app_config, "preload", None)
    if preload is not None:
        preload()
