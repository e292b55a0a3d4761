"""``python manage.py analytics_rebuild``: rebuild the read model from the stream's first event."""

import sys

from django.core.management.base import BaseCommand

from analytics.consumer import Progress, rebuild


class Command(BaseCommand):
    help = (
        "Rebuild the analytics read model from the first retained event into a new generation, and "
        "switch to it atomically once it has caught up; the live one keeps serving meanwhile."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=2000)
        parser.add_argument("--keep-retired", action="store_true", help="keep the replaced generation's rows")

    def handle(self, *args, batch_size: int, keep_retired: bool, **options):
        interactive = sys.stderr.isatty()

        def show(progress: Progress) -> None:
            width = 30
            total = (progress.tail + 1) if progress.tail is not None else progress.next_offset
            done = min(progress.next_offset, total)
            filled = int(width * done / total) if total else width
            line = (
                f"[{'#' * filled}{'.' * (width - filled)}] offset {done}/{total}  "
                f"{progress.events_per_second:,.0f} events/s  lag {progress.lag} events"
            )
            self.stderr.write(("\r" + line) if interactive else line, ending="" if interactive else "\n")

        result = rebuild(batch_size=batch_size, progress=show, purge=not keep_retired)
        if interactive:
            self.stderr.write("")
        self.stdout.write(
            f"generation {result.generation} active: {result.folded} events in {result.seconds:.1f} s "
            f"({result.events_per_second:,.0f} events/s), at offset {result.next_offset}"
        )
