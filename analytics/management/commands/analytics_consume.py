"""``python manage.py analytics_consume``: the live analytics consumer (a process of its own)."""

import signal

from django.core.management.base import BaseCommand

from analytics.consumer import consume_live


class Command(BaseCommand):
    help = "Fold the event stream into the analytics read model, from its stored position, until stopped."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=1000)

    def handle(self, *args, batch_size: int, **options):
        stopping = []

        def stop(signum, frame):
            stopping.append(signum)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write("analytics consumer started")
        consume_live(stop=lambda: bool(stopping), batch_size=batch_size)
        self.stdout.write("analytics consumer stopped")
