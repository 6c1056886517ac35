import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
application = get_wsgi_application()

# The OpenAI SDK takes about a second to import; load it with the worker, not on its first request.
import conversations.agents.openai_agent  # noqa: E402, F401
