from django.core.management.base import BaseCommand

from api.maintenance.cleanup import cleanup_run


class Command(BaseCommand):
    help = (
        "Run the periodic clean-up now (the same code as Celery beat's cleanup_task): delete expired "
        "idempotency records and expired media (rows and files), release abandoned reservations, close "
        "conversations idle for longer than their channel's inactivity timeout."
    )

    def handle(self, *args, **options):
        result = cleanup_run()
        self.stdout.write(
            f"Idempotency records deleted: {result.idempotency_records}\n"
            f"Media assets deleted: {result.media_assets}\n"
            f"Media files deleted: {result.media_files}\n"
            f"Abandoned messages released: {result.abandoned_messages} "
            f"({result.abandoned_credits} credits returned)\n"
            f"Idle conversations closed: {result.idle_conversations}\n"
        )
