from django.apps import AppConfig


class OutboxConfig(AppConfig):
    name = "outbox"
    verbose_name = "Messaging (outbox, inbox, dead letters)"

    def ready(self) -> None:
        from outbox import handlers  # noqa: F401  registers the ping handler
