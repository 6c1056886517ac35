from django.core.management import call_command
from django.core.management.base import BaseCommand

from config.locks import database_lock

# One name for every node of a deployment: the lock is per database, so two deployments never share it.
MIGRATE_LOCK = "channels-api:migrate"


class Command(BaseCommand):
    help = (
        "Run `migrate` while holding a PostgreSQL advisory lock, so that nodes starting at once migrate one "
        "after the other (`make serve` runs this). Without a lock, two migrates on a fresh database race on "
        "creating the same tables and content types, and one of them fails."
    )
    requires_system_checks: list = []  # `migrate` runs them, inside the lock

    def add_arguments(self, parser):
        parser.add_argument("--database", default="default", help="The database to migrate (default: default).")

    def handle(self, *args, **options):
        with database_lock(name=MIGRATE_LOCK, using=options["database"]):
            call_command(
                "migrate",
                database=options["database"],
                interactive=False,
                verbosity=options["verbosity"],
                stdout=self.stdout,
                stderr=self.stderr,
            )
