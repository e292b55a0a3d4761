"""The project's own app config: sets up tracing once Django is ready, in every process that
loads Django (web, workers, beat, management commands, tests)."""

from django.apps import AppConfig


class ProjectConfig(AppConfig):
    name = "config"
    label = "config"
    verbose_name = "Project configuration"

    def ready(self) -> None:
        from common.tracing import configure_tracing

        # Before the first request handler loads the middleware: Django's instrumentation
        # inserts its own at the front of settings.MIDDLEWARE.
        configure_tracing()
