#!/bin/sh
# Runs with the project's .venv whichever way it is called: `./manage.py ...` (this line hands it to
# .venv/bin/python) or `.venv/bin/python manage.py ...` (the README's way; Python reads the line below as a
# string and ignores it).
''''exec "$(dirname -- "$0")/.venv/bin/python" "$0" "$@" #'''  # fmt: skip

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    import psycopg
    from django.core.management import execute_from_command_line
    from django.db.utils import OperationalError

    try:
        execute_from_command_line(sys.argv)
    except (OperationalError, psycopg.OperationalError) as error:  # Django's, or a connection of our own
        from config.db import unreachable_database_sentence

        sys.exit(unreachable_database_sentence(error))
