"""``python manage.py analytics_consume``: the live analytics consumer (a process of its own)."""

import signal
import time

from django.core.management.base import BaseCommand

from analytics.consumer import consume_live
from outbox.stream import event_stream


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
        if event_stream() is None:
            # Nothing to follow; stay up so that a supervisor does not restart it in a loop.
            self.stdout.write("no event stream configured (EVENT_STREAM_URL): the analytics consumer waits")
            while not stopping:
                time.sleep(1)
            return
        self.stdout.write("analytics consumer started")
        consume_live(stop=lambda: bool(stopping), batch_size=batch_size)
        self.stdout.write("analytics consumer stopped")
